package conductor

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
)

// maxJobReads bounds the reads of job states by request (serveJobReads)
// in flight at once; past it a request is answered 503.
const maxJobReads = 256

// serveJobReads answers a credential's reads of a job's state on its own
// subject, conductor.<ns>.as.<id>.job, the job id the request's body: 200
// and the job's state if it is of one of the credential's types, else
// 404, as GET /v1/jobs/{id} answers; on the credential's own inbox only.
// A submitter has no other way to read a state: it has no JetStream API.
func (c *Conductor) serveJobReads() error {
	slots := make(chan struct{}, maxJobReads)
	sub, err := c.nc.QueueSubscribe(c.space.JobsAs(), "conductord", func(m *nats.Msg) {
		id := c.space.JobAsOf(m.Subject)
		if id == "" || !subject.IsInboxOf(m.Reply, id) {
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			c.answer(m, http.StatusServiceUnavailable, map[string]string{"error": "too many reads waiting; retry later"})
			return
		}
		c.serveAsync(func() { <-slots }, func() {
			code, answer := c.readJobAs(id, string(m.Data))
			c.answer(m, code, answer)
		})
	})
	if err != nil {
		return fmt.Errorf("conductor: serve the reads of job states: %w", err)
	}
	c.subs = append(c.subs, sub)
	return nil
}

// readJobAs reads job jobID for credential id: a job submitted on its
// behalf, or, if this conductord's credentials hold it, one of its types.
// (The credentials of another namespace are in the file of the conductord
// that embeds the server; their jobs are theirs by Submitter.)
func (c *Conductor) readJobAs(id, jobID string) (int, any) {
	j, err := c.client.Job(c.closing, jobID)
	if err == nil && j.Submitter != id {
		cr, ok := c.access.creds.Load().Get(id)
		if !ok || !cr.AllowsType(j.Type) {
			err = client.ErrJobNotFound
		}
	}
	switch {
	case errors.Is(err, client.ErrJobNotFound):
		return http.StatusNotFound, map[string]string{"error": "no job " + jobID}
	case err != nil:
		return http.StatusServiceUnavailable, map[string]string{"error": err.Error()}
	}
	return http.StatusOK, j
}

// answer sends answer, with its status, to m's reply subject, which the
// caller has checked.
func (c *Conductor) answer(m *nats.Msg, code int, answer any) {
	if err := c.nc.PublishMsg(hostsvc.NewAnswer(m.Reply, code, answer)); err != nil {
		c.log.Warn("answer a request", "err", err)
	}
}
