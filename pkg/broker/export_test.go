package broker

import "time"

// SetCheckInterval sets how often pools started from now on look for
// workers to recycle by age and memory, and returns a func restoring it.
func SetCheckInterval(d time.Duration) func() {
	old := checkInterval.Swap(int64(d))
	return func() { checkInterval.Store(old) }
}
