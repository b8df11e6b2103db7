package main

import "fmt"

// failed is closed when the host cannot go on: the drain loop stopped on
// its own (the shm file was damaged). err says why.
func (h *host) failed() <-chan struct{} { return h.drainDead }

// err is what stopped the host on its own, nil after a requested stop.
func (h *host) err() error {
	if h.drainErr == nil {
		return nil
	}
	return fmt.Errorf("%w; exiting so that a restart re-creates the file", h.drainErr)
}
