package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A start on damaged storage is loud. The embedded server recovers what it
// can of a cut or corrupt block file and goes on, keeping the stream's last
// sequence; so that lost jobs and states do not go unseen, the storage
// guard keeps a checkpoint of each stream's sequences and message count in
// the data directory (written when they changed, at most every
// checkpointEvery, fsynced, and at stop, marked clean), and a start
// compares the streams it finds with it. A loss is a last sequence that
// went back; messages missing from a stream that the server had to rebuild
// from its files though it was stopped cleanly (its index, written at the
// stop, no longer matched them); or messages the server reports lost. Losses are
// logged once as an error, kept in the checkpoint file until an operator
// removes them (docs/reliability.md), and shown by /healthz and the
// metrics meanwhile.

// CheckpointFile is the checkpoint's name in Config.DataDir.
const CheckpointFile = "conductor-checkpoint.json"

// checkpointEvery bounds how often the checkpoint is written.
const checkpointEvery = 5 * time.Second

// StreamLoss is what a start found lost of one stream.
type StreamLoss struct {
	Stream string `json:"stream"`
	// Msgs is how many messages were lost (at most: of a cut tail, some
	// may have been acked or deleted already).
	Msgs uint64 `json:"msgs"`
	// Bytes is how many bytes the server reports lost, if it knows.
	Bytes uint64 `json:"bytes,omitempty"`
	// Detail says how the loss was found.
	Detail string `json:"detail"`
	// At is the start that found it.
	At time.Time `json:"at"`
}

// streamMark is a stream's state when the checkpoint was written.
type streamMark struct {
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Msgs     uint64 `json:"msgs"`
}

// checkpointData is the checkpoint file.
type checkpointData struct {
	// Clean is true when the file was written at a stop: nothing changed
	// the streams since, but messages expiring from their heads.
	Clean   bool                  `json:"clean"`
	Streams map[string]streamMark `json:"streams"`
	// Lost stays until an operator removes it (or the file).
	Lost []StreamLoss `json:"lost,omitempty"`
}

// checkpoint reads and writes the file. Owned by the Conductor's start,
// then by the storage guard's goroutine.
type checkpoint struct {
	path    string
	log     *slog.Logger
	data    checkpointData // as last written or read
	checked time.Time      // the streams were last read
}

func newCheckpoint(dir string, log *slog.Logger) *checkpoint {
	return &checkpoint{path: filepath.Join(dir, CheckpointFile), log: log}
}

// verify compares the streams of js with the checkpoint, records and
// logs what was lost, and returns every loss not yet cleared. rebuilt are
// the streams whose state the server rebuilt from their files at this
// start (it warned about them).
func (cp *checkpoint) verify(ctx context.Context, js jetstream.JetStream, rebuilt map[string]bool) ([]StreamLoss, error) {
	raw, err := os.ReadFile(cp.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("conductor: read the storage checkpoint: %w", err)
	default:
		if err := json.Unmarshal(raw, &cp.data); err != nil {
			return nil, fmt.Errorf("conductor: storage checkpoint %s is unreadable (remove it to start afresh): %w", cp.path, err)
		}
	}
	infos, err := streamInfos(ctx, js)
	if err != nil {
		return nil, err
	}
	at := time.Now().UTC()
	var found []StreamLoss
	for _, name := range slices.Sorted(maps.Keys(cp.data.Streams)) {
		var now streamMark
		if info := infos[name]; info != nil {
			now = markOf(info)
		}
		if l, ok := compareMark(cp.data.Streams[name], now, cp.data.Clean && rebuilt[name]); ok {
			l.Stream, l.At = name, at
			found = append(found, l)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(infos)) {
		if lost := infos[name].State.Lost; lost != nil && len(lost.Msgs) > 0 {
			found = append(found, StreamLoss{Stream: name, Msgs: uint64(len(lost.Msgs)), Bytes: lost.Bytes, At: at,
				Detail: "the server found messages lost in its block files"})
		}
	}
	if len(found) > 0 {
		var n uint64
		for _, l := range found {
			n += l.Msgs
		}
		streams := make([]string, 0, len(found))
		for _, l := range found {
			streams = append(streams, fmt.Sprintf("%s=%d", l.Stream, l.Msgs))
		}
		cp.log.Error("storage damaged: messages lost at start; see docs/reliability.md, \"Storage\"",
			"lost_msgs", n, "streams", strings.Join(streams, ","), "data", filepath.Dir(cp.path), "checkpoint", cp.path)
		cp.data.Lost = append(cp.data.Lost, found...)
	}
	cp.data.Streams, cp.data.Clean = marks(infos), false
	if err := cp.write(); err != nil {
		return nil, err
	}
	return slices.Clone(cp.data.Lost), nil
}

// compareMark finds what was lost of a stream that was at its
// checkpoint and is now now. Its last sequence never goes back. A stream
// that was stopped cleanly but whose files no longer matched their index
// at this start (rebuilt) was damaged: the messages it misses, beyond
// those that expired from its head, were lost (a few of them may have been
// acked between the checkpoint and the server's stop).
func compareMark(was, now streamMark, rebuilt bool) (StreamLoss, bool) {
	if now.LastSeq < was.LastSeq {
		return StreamLoss{Msgs: was.LastSeq - now.LastSeq, Detail: fmt.Sprintf(
			"last sequence %d, %d at the checkpoint: the tail of the stream is gone", now.LastSeq, was.LastSeq)}, true
	}
	if !rebuilt {
		return StreamLoss{}, false
	}
	expired := uint64(0)
	if now.FirstSeq > was.FirstSeq {
		expired = now.FirstSeq - was.FirstSeq
	}
	if now.Msgs+expired >= was.Msgs {
		return StreamLoss{}, false
	}
	return StreamLoss{Msgs: was.Msgs - expired - now.Msgs, Detail: fmt.Sprintf(
		"%d messages, %d at the clean stop before, and its files did not match its index: messages inside the stream are gone",
		now.Msgs, was.Msgs)}, true
}

// save reads the streams every checkpointEvery, or at once with force at
// a stop (a clean checkpoint), and writes the checkpoint if they moved. Errors are logged: the checkpoint is a witness, not the
// store.
func (cp *checkpoint) save(ctx context.Context, js jetstream.JetStream, force bool) {
	if cp == nil || (!force && time.Since(cp.checked) < checkpointEvery) {
		return
	}
	cp.checked = time.Now()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	infos, err := streamInfos(ctx, js)
	if err != nil {
		cp.log.Debug("read the streams for the storage checkpoint", "err", err)
		return
	}
	m := marks(infos)
	if maps.Equal(m, cp.data.Streams) && cp.data.Clean == force {
		return
	}
	cp.data.Streams, cp.data.Clean = m, force
	if err := cp.write(); err != nil {
		cp.log.Warn("write the storage checkpoint", "err", err)
	}
}

// write replaces the file with cp.data, fsynced, so that it is never
// behind what the store had acknowledged before it.
func (cp *checkpoint) write() error {
	raw, err := json.MarshalIndent(cp.data, "", "  ")
	if err != nil {
		return err
	}
	tmp := cp.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("conductor: write the storage checkpoint: %w", err)
	}
	_, err = f.Write(append(raw, '\n'))
	err = errors.Join(err, f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, cp.path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("conductor: write the storage checkpoint: %w", err)
	}
	if d, err := os.Open(filepath.Dir(cp.path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func streamInfos(ctx context.Context, js jetstream.JetStream) (map[string]*jetstream.StreamInfo, error) {
	out := map[string]*jetstream.StreamInfo{}
	list := js.ListStreams(ctx)
	for info := range list.Info() {
		out[info.Config.Name] = info
	}
	if err := list.Err(); err != nil {
		return nil, fmt.Errorf("conductor: list the streams: %w", err)
	}
	return out, nil
}

func marks(infos map[string]*jetstream.StreamInfo) map[string]streamMark {
	m := make(map[string]streamMark, len(infos))
	for name, info := range infos {
		m[name] = markOf(info)
	}
	return m
}

func markOf(info *jetstream.StreamInfo) streamMark {
	return streamMark{FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq, Msgs: info.State.Msgs}
}

// lossReason sums losses up for a person.
func lossReason(lost []StreamLoss) string {
	parts := make([]string, 0, len(lost))
	for _, l := range lost {
		parts = append(parts, fmt.Sprintf("%s: %d messages lost (%s, found %s)", l.Stream, l.Msgs, l.Detail, l.At.Format(time.RFC3339)))
	}
	return "storage damaged: " + strings.Join(parts, "; ") + "; see docs/reliability.md, \"Storage\""
}
