package worker

import "errors"

// ErrChannelClosed is returned by Run when workerd closes the channel (end of
// file on fd 3): workerd is gone, and so no job can be reported any more. It
// is also the cause of the running handler's context cancellation.
var ErrChannelClosed = errors.New("worker: channel closed by workerd")

// Causes of the cancellation of a handler's context, read with context.Cause.
var (
	errCancelled = errors.New("worker: job cancelled by workerd")
	errHardStop  = errors.New("worker: hard stop")
)

// Permanent wraps err so that the job fails for good: workerd does not retry
// it and marks it dead. The wrapper adds nothing to the message, and
// errors.Is and errors.As see through it. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether any error in err's tree was wrapped with
// Permanent.
func IsPermanent(err error) bool {
	_, ok := errors.AsType[*permanentError](err)
	return ok
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }
