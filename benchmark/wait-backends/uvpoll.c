/* Benchmark-only: the uv_poll_t wait backend fdpass did not pick, kept so the
 * comparison in docs/WAITING.md can be re-run. Not part of the package.
 *
 * watch(fd, relay) -> handle; wait(handle, events, callback) calls back once when
 * the fd is ready for events (1 readable, 2 writable). */
#include <node_api.h>
#include <stdlib.h>
#include <uv.h>

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  napi_threadsafe_function relay; /* set: deliver through a threadsafe function */
} watcher;

static void relay_call_js(napi_env env, napi_value js_cb, void *ctx, void *data) {
  (void)js_cb;
  (void)data;
  watcher *w = ctx;
  napi_unref_threadsafe_function(env, w->relay);
  napi_value callback, global, result;
  napi_get_reference_value(env, w->callback, &callback);
  napi_get_global(env, &global);
  napi_call_function(env, global, callback, 0, NULL, &result);
}

static void on_readable(uv_poll_t *poll, int status, int events) {
  (void)status;
  (void)events;
  watcher *w = poll->data;
  uv_poll_stop(poll);
  if (w->relay) {
    napi_call_threadsafe_function(w->relay, NULL, napi_tsfn_nonblocking);
    return;
  }
  napi_handle_scope scope;
  napi_open_handle_scope(w->env, &scope);
  napi_value callback, global, result;
  napi_get_reference_value(w->env, w->callback, &callback);
  napi_get_global(w->env, &global);
  /* make_callback runs the microtask queue afterwards, as libuv callbacks in
   * Node core do; a bare call would leave promise reactions pending. */
  napi_make_callback(w->env, w->context, global, callback, 0, NULL, &result);
  napi_close_handle_scope(w->env, scope);
}

static napi_value watch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], resource, name, handle;
  int32_t fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_get_value_int32(env, argv[0], &fd);
  watcher *w = calloc(1, sizeof *w);
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  uv_poll_init(loop, &w->poll, fd);
  w->poll.data = w;
  w->env = env;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "uvpoll", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, resource, name, &w->context);
  bool relay = false;
  if (argc > 1) napi_get_value_bool(env, argv[1], &relay);
  if (relay) {
    napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, w, relay_call_js, &w->relay);
    napi_unref_threadsafe_function(env, w->relay);
  }
  napi_create_external(env, w, NULL, NULL, &handle);
  return handle;
}

static napi_value wait_readable(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  watcher *w;
  int32_t events;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_get_value_external(env, argv[0], (void **)&w);
  napi_get_value_int32(env, argv[1], &events);
  if (w->callback) napi_delete_reference(env, w->callback);
  napi_create_reference(env, argv[2], 1, &w->callback);
  /* A stopped poll no longer keeps the loop alive, so the relay must until it runs. */
  if (w->relay) napi_ref_threadsafe_function(env, w->relay);
  uv_poll_start(&w->poll, events, on_readable);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"watch", NULL, watch, NULL, NULL, NULL, napi_default, NULL},
      {"wait", NULL, wait_readable, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
