//! The one place core errors become JavaScript errors.

use napi::bindgen_prelude::*;

/// Builds a JS `Error` with Node's fields: `code` always, and `errno` (negative,
/// as Node's own system errors carry it) and `syscall` for system errors.
pub fn to_js(env: &Env, err: fdpass::Error) -> Error {
    let code = err.code();
    let message = match err.errno() {
        Some((_, syscall)) => format!("{code}: {err} ({syscall})"),
        None => err.to_string(),
    };
    let build = || -> Result<Object<'_>> {
        let mut obj = env.create_error(Error::new(Status::GenericFailure, message.clone()))?;
        obj.set("code", code)?;
        if let Some((errno, syscall)) = err.errno() {
            obj.set("errno", -errno)?;
            obj.set("syscall", syscall)?;
        }
        Ok(obj)
    };
    match build() {
        Ok(obj) => Error::from(obj.to_unknown()),
        Err(_) => Error::new(Status::GenericFailure, message),
    }
}

/// Shorthand for binding methods: run a core call, map its error.
pub trait OrThrow<T> {
    fn or_throw(self, env: &Env) -> Result<T>;
}

impl<T> OrThrow<T> for fdpass::Result<T> {
    fn or_throw(self, env: &Env) -> Result<T> {
        self.map_err(|e| to_js(env, e))
    }
}
