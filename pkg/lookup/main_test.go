package lookup

import (
	"testing"

	"go.uber.org/goleak"
)

// Every watch's goroutine ends with its context.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
