package mapping

import "github.com/tapes-go/tapes/wire"

// Func returns a Mapper that asks f: a mapping written in Go instead of a
// file. f must be safe for concurrent use and return labels sorted by name.
func Func(f func(name string, kind wire.Kind) (Result, bool)) *Mapper {
	return newMapper(funcMapper(f))
}

type funcMapper func(name string, kind wire.Kind) (Result, bool)

func (f funcMapper) mapName(name string, kind wire.Kind) (Result, bool) { return f(name, kind) }
