package plugin_test

import (
	"os"
	"testing"

	"github.com/tapes-go/tapes/internal/guesttest"
)

// The guests are rebuilt from their source once per test binary, and the
// tests use the rebuilt files (internal/guesttest).
var guests guesttest.Guests

func TestMain(m *testing.M) { os.Exit(guests.Main(m)) }

func cGuest(t testing.TB, name string) []byte       { return guests.C(t, name) }
func cCommand(t testing.TB, name string) []byte     { return guests.Command(t, name) }
func goGuest(t testing.TB, dir string) []byte       { return guests.Go(t, dir, "c-shared") }
func goBuild(t testing.TB, dir, mode string) []byte { return guests.Go(t, dir, mode) }
