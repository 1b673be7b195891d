package broker

import "time"

// SetCheckInterval sets how often a pool made from cfg looks for workers
// to recycle by age and memory.
func SetCheckInterval(cfg *Config, d time.Duration) { cfg.test.checkInterval = d }
