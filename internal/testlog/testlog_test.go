package testlog

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Loggers on many goroutines write whole lines while a reader reads.
func TestBuffer_ConcurrentWriters(t *testing.T) {
	var b Buffer
	log := slog.New(slog.NewTextHandler(&b, nil))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 100 {
				log.Info("line", "writer", i, "n", j)
				_ = b.String()
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 800 {
		t.Fatalf("%d lines, want 800", len(lines))
	}
	for _, l := range lines {
		if !strings.Contains(l, `msg=line`) {
			t.Fatalf("a line cut or mixed: %q", l)
		}
	}
}
