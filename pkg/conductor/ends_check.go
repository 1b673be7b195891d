package conductor

import (
	"bytes"
	"fmt"

	"github.com/conductor-run/conductor/internal/archive"
	"github.com/conductor-run/conductor/internal/jsonfast"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// The checks of the ends the taker takes (ends.go), and their passing on
// to the batch watcher and the waits.

// unknownEnds keeps, of ends announced again (wire.Ends.Again), those of
// jobs the archive has no record of: the others were counted when first
// announced. Without an archive (MemoryStorage) it cannot tell, and keeps
// none: a job's end is counted at most once.
func (c *Conductor) unknownEnds(ends wire.Ends) wire.Ends {
	kept := ends.Jobs[:0]
	for _, e := range ends.Jobs {
		if c.archive == nil {
			break
		}
		if _, ok, err := c.archive.store.Get(e.ID); err == nil && !ok {
			if _, ok, err := c.archive.peers(e.ID); err == nil && !ok {
				kept = append(kept, e)
			}
		}
	}
	ends.Jobs = kept
	return ends
}

// decodeEnds reads the ends of a burst of attempts; unreadable ends, and
// ends whose type is not their subject's, are logged and ignored. The
// ends of a host on a credential of its own (subject.EndsAs) are counted,
// but the final states they carry are not taken on its word: see
// hostEnd.
func (c *Conductor) decodeEnds(subj string, data []byte) (wire.Ends, bool) {
	cred, typ := c.space.ParseEnds(subj)
	ends, err := wire.DecodeEnds(data)
	if err == nil && (ends.Type == "" || ends.Type != typ) {
		err = fmt.Errorf("type %q on the subject of type %q", ends.Type, typ)
	}
	if err != nil {
		c.log.Warn("ignoring unreadable job ends", "subject", subj, "err", err)
		if c.onEnds != nil {
			c.onEnds(nil)
		}
		return ends, false
	}
	// An end no job could have (an id that is no job id, a state too
	// large to keep) is dropped, the rest kept: one bad end must not hold
	// up the others for ever.
	kept := ends.Jobs[:0]
	for _, e := range ends.Jobs {
		if subject.Token("job id", e.ID) != nil || len(e.State) > archive.MaxStateLen {
			c.log.Warn("ignoring a job end no job could have", "subject", subj, "job", fmt.Sprintf("%.100q", e.ID), "state_bytes", len(e.State))
			continue
		}
		if cred != "" {
			e = c.hostEnd(cred, typ, e)
		} else if len(e.State) > 0 && !stateOf(e.State, e.ID, ends.Type) {
			// A host may end jobs of its types only: a state of another
			// job, or of another type, is not archived.
			c.log.Warn("ignoring a job end whose state is another job's or another type's", "subject", subj, "job", e.ID)
			continue
		}
		kept = append(kept, e)
	}
	ends.Jobs = kept
	return ends, true
}

// hostEnd is e, an end of a job of type typ that the host on credential
// cred announced, as conductord takes it: its final state is archived
// only if the store wrote it and could not archive it then (the store
// archives what it writes: hostsvc.Server.Ended; one archived then is
// kept, marked Archived, for the job's waits), and a state the store did
// not write (forged, or one written before conductord last started,
// archived then) is dropped, with the batch the end names. The end
// itself is counted: a host may tell how its own types' jobs ended.
func (c *Conductor) hostEnd(cred, typ string, e wire.End) wire.End {
	if len(e.State) == 0 {
		e.Batch = "" // a batch's end carries its state
		return e
	}
	archived, ok := c.hostsvc.Ended(typ, e.ID, e.State)
	if !ok {
		if c.endRefusals.Allow() {
			c.log.Warn("a host's job end carries a state the store did not write; counted, not archived", "credential", cred, "job", e.ID)
		}
		e.State, e.Batch = nil, ""
	} else if archived {
		e.Archived = true
	}
	return e
}

// stateOf reports whether state is that of job id of type typ: workerd
// writes a state's id and type first (wire.Job.AppendJSON), and both are
// tokens, which JSON writes as they are.
func stateOf(state []byte, id, typ string) bool {
	var head [2 * (subject.MaxTokenLen + 16)]byte
	p := append(head[:0], `{"id":`...)
	p = jsonfast.AppendString(p, id)
	p = append(p, `,"type":`...)
	p = jsonfast.AppendString(p, typ)
	return bytes.HasPrefix(state, p)
}

// jobEnds passes the final ends of a burst of attempts, counted (or
// counted already), to the batch watcher and the Client's waits. A final
// end carries the job's state as its host stored it, checked by
// decodeEnds: the waits answer with it, and read nothing back.
func (c *Conductor) jobEnds(ends wire.Ends) {
	var ended []string // for onEnds
	if c.onEnds != nil {
		defer func() { c.onEnds(ended) }()
	}
	for _, e := range ends.Jobs {
		if !e.Status.Final() {
			continue
		}
		if e.Batch != "" {
			c.batchEnds.mark(e.Batch)
		}
		c.client.JobEndedWith(e.ID, e.State)
		if c.onEnds != nil {
			ended = append(ended, e.ID)
		}
	}
}
