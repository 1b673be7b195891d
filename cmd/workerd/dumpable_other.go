//go:build !linux

package main

// undumpable does nothing where there is no prctl.
func undumpable() error { return nil }
