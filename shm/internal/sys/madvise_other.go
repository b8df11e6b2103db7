//go:build !linux

package sys

func Populate(m []byte, from, to int) {}

func ZeroRange(m []byte, from, to int) { clear(m[from:to]) }
