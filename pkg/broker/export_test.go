package broker

import "time"

// SetCheckInterval sets how often a pool made from cfg looks for workers
// to recycle by age and memory.
func SetCheckInterval(cfg *Config, d time.Duration) { cfg.test.checkInterval = d }

// OnWorkersChanged sets the test signal of a pool made from cfg that fires
// after every change of what Pool.Workers returns. f must not block.
func OnWorkersChanged(cfg *Config, f func()) { cfg.test.workersChanged = f }
