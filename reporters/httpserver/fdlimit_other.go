//go:build !unix

package httpserver

// fdLimit: no descriptor limit to follow here; MaxConns alone caps.
func fdLimit() (int, bool) { return 0, false }
