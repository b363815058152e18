module github.com/fdpass/fdpass/interop/go

go 1.26.0

require (
	github.com/ftrvxmtrx/fd v0.0.0-20150925145434-c6d800382fff
	golang.org/x/sys v0.49.0
)
