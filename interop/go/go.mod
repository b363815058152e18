module github.com/fdpass/fdpass/interop/go

// go 1.19 and x/sys v0.30.0 (the last that asks for no more than go 1.18), so
// that Debian 12's Go, which .ci/run installs where Go is missing, builds it.
go 1.19

require (
	github.com/ftrvxmtrx/fd v0.0.0-20150925145434-c6d800382fff
	golang.org/x/sys v0.30.0
)
