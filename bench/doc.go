// Package bench holds the benchmarks that compare tapes with the peer
// libraries a user would otherwise pick. It is its own module so that those
// peers never become dependencies of tapes.
package bench
