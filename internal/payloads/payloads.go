// Package payloads keeps the payloads too large to travel in a job's
// message: each is an object of the namespace's payload bucket (a
// JetStream object store), and the job's message carries its reference
// (wire.PayloadRef) instead. Submitters with the store's trust write them
// (conductord, a Client with full access: Put); workerd reads them with
// message reads alone (Reader), which a host with a credential of its own
// may make, when a worker takes the job; conductord removes them once the
// job has ended for good (Delete). docs/protocol.md, "Large payloads".
package payloads

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/conductor-run/conductor/internal/wire"
)

// ChunkSize is the size of the chunks a payload is stored in: each is
// one message, read with one request, well under the smallest max_payload
// a NATS server is likely to have (1 MiB).
const ChunkSize = 256 << 10

var (
	// ErrGone is a payload whose object is not in the bucket (removed,
	// or never written): its job cannot run.
	ErrGone = errors.New("its payload's object is not in the payload bucket")
	// ErrNotMatching is an object that is not the payload its reference
	// names: another size or digest. Its job cannot run.
	ErrNotMatching = errors.New("its payload's object does not match the size and digest its message names")
	// ErrTooLarge is a reference to a payload over the reader's limit.
	ErrTooLarge = errors.New("its payload is over this host's limit")
)

// Permanent reports whether err, from Reader.Read, will not change if the
// read is made again: the job cannot run.
func Permanent(err error) bool {
	return errors.Is(err, ErrGone) || errors.Is(err, ErrNotMatching) || errors.Is(err, ErrTooLarge)
}

// StreamName is the name of the stream that holds the objects of bucket.
func StreamName(bucket string) string { return "OBJ_" + bucket }

// metaSubject and chunkSubject are where the object store keeps an
// object's description and its chunks.
func metaSubject(bucket, name string) string {
	return "$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
}

func chunkSubject(bucket, nuid string) string { return "$O." + bucket + ".C." + nuid }

// objectName names the object of a payload of job id: the job's id and a
// random suffix, so that a second submission of the job (an idempotent
// repeat) never replaces the object its first message names.
func objectName(id string) string {
	return id + "." + strconv.FormatUint(rand.Uint64(), 36)
}

// Put stores data as a payload of job id, of type typ, in b, as the
// object store lays an object out (its chunks, then its description),
// and returns its reference. Its chunks are published asynchronously on
// b's JetStream context, each answer awaited. A
// failed Put removes the chunks it wrote. (The object store's own Put
// makes a JetStream context of its own for each object, whose goroutine
// can outlive it.)
func Put(ctx context.Context, b *Bucket, typ, id string, data []byte) (wire.PayloadRef, error) {
	stream, err := b.Stream(ctx)
	if err != nil {
		return wire.PayloadRef{}, err
	}
	js, bucket, name := b.js, b.name, objectName(id)
	info := jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{
			Name: name, Headers: nats.Header{HeaderType: []string{typ}},
			Opts: &jetstream.ObjectMetaOptions{ChunkSize: ChunkSize},
		},
		Bucket: bucket, NUID: nuid.Next(), Size: uint64(len(data)),
	}
	chunks := chunkSubject(bucket, info.NUID)
	fail := func(err error) (wire.PayloadRef, error) {
		// Past ctx: the chunks sent must go even if the caller gave up.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if perr := stream.Purge(pctx, jetstream.WithPurgeSubject(chunks)); perr != nil {
			err = fmt.Errorf("%w; the chunks it stored could not be removed: %v", err, perr)
		}
		return wire.PayloadRef{}, fmt.Errorf("store the payload of job %s: %w", id, err)
	}
	h := sha256.New()
	var acks []jetstream.PubAckFuture
	for off := 0; off < len(data); off += ChunkSize {
		chunk := data[off:min(off+ChunkSize, len(data))]
		h.Write(chunk)
		ack, err := js.PublishMsgAsync(&nats.Msg{Subject: chunks, Data: chunk})
		if err != nil {
			return fail(err)
		}
		acks = append(acks, ack)
		info.Chunks++
	}
	for _, ack := range acks {
		select {
		case <-ack.Ok():
		case err := <-ack.Err():
			return fail(err)
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
	info.Digest = wire.DigestPrefix + base64.URLEncoding.EncodeToString(h.Sum(nil))
	meta, err := json.Marshal(&info)
	if err != nil {
		return fail(err)
	}
	m := nats.NewMsg(metaSubject(bucket, name))
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	m.Data = meta
	if _, err := js.PublishMsg(ctx, m); err != nil {
		return fail(err)
	}
	ref := wire.PayloadRef{Object: name, Size: int64(len(data)), Digest: info.Digest}
	if err := ref.Check(); err != nil {
		return fail(err)
	}
	return ref, nil
}

// Delete removes the object name from b: its chunks, then its
// description, with no marker left behind (an object store's own Delete
// leaves one for each object, for ever). An object that is not there is
// no error.
func Delete(ctx context.Context, b *Bucket, name string) error {
	stream, err := b.Stream(ctx)
	if err != nil {
		return err
	}
	bucket := b.name
	msg, err := stream.GetLastMsgForSubject(ctx, metaSubject(bucket, name))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read payload object %s: %w", name, err)
	}
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(msg.Data, &info); err == nil && info.NUID != "" {
		if err := stream.Purge(ctx, jetstream.WithPurgeSubject(chunkSubject(bucket, info.NUID))); err != nil {
			return fmt.Errorf("remove payload object %s: %w", name, err)
		}
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(metaSubject(bucket, name))); err != nil {
		return fmt.Errorf("remove payload object %s: %w", name, err)
	}
	return nil
}

// Source is where a Reader reads an object's description and its
// chunks: the bucket's stream (StreamSource), or conductord for a host
// with a credential of its own (hostsvc.Caller.Payloads).
type Source interface {
	// Info returns the description of the object name; an error that is
	// ErrGone if there is none.
	Info(ctx context.Context, name string) (*jetstream.ObjectInfo, error)
	// Chunk returns the first chunk of the object whose chunks are named
	// nuid at or after stream sequence from, and its sequence; an error
	// that is ErrGone if there is none.
	Chunk(ctx context.Context, name, nuid string, from uint64) ([]byte, uint64, error)
}

// Bucket is a payload bucket, its stream bound at the first use that
// finds it. It is safe for concurrent use.
type Bucket struct {
	js   jetstream.JetStream
	name string

	mu     sync.Mutex
	stream jetstream.Stream
}

// NewBucket returns the payload bucket name, reached through js.
func NewBucket(js jetstream.JetStream, name string) *Bucket {
	return &Bucket{js: js, name: name}
}

// Name is the bucket's name.
func (b *Bucket) Name() string { return b.name }

// Stream returns the bucket's stream, binding it first.
func (b *Bucket) Stream(ctx context.Context) (jetstream.Stream, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stream != nil {
		return b.stream, nil
	}
	st, err := b.js.Stream(ctx, StreamName(b.name))
	if err != nil {
		return nil, fmt.Errorf("open the payload bucket %s: %w", b.name, err)
	}
	b.stream = st
	return st, nil
}

// StreamSource returns a Source that reads bucket's stream, with message
// reads only: no consumer is made.
func StreamSource(bucket *Bucket) Source { return streamSource{bucket} }

type streamSource struct{ b *Bucket }

func (s streamSource) Info(ctx context.Context, name string) (*jetstream.ObjectInfo, error) {
	stream, err := s.b.Stream(ctx)
	if err != nil {
		return nil, err
	}
	return ReadInfo(ctx, stream, s.b.name, name)
}

func (s streamSource) Chunk(ctx context.Context, name, nuid string, from uint64) ([]byte, uint64, error) {
	stream, err := s.b.Stream(ctx)
	if err != nil {
		return nil, 0, err
	}
	return ReadChunk(ctx, stream, s.b.name, name, nuid, from)
}

// ReadInfo reads the description of object name from bucket's stream;
// an error that is ErrGone if there is none, or it was removed.
func ReadInfo(ctx context.Context, stream jetstream.Stream, bucket, name string) (*jetstream.ObjectInfo, error) {
	msg, err := stream.GetLastMsgForSubject(ctx, metaSubject(bucket, name))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrGone, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read payload object %s: %w", name, err)
	}
	var info jetstream.ObjectInfo
	switch err := json.Unmarshal(msg.Data, &info); {
	case err != nil:
		return nil, fmt.Errorf("%w: the description of %s does not read: %v", ErrNotMatching, name, err)
	case info.Deleted:
		return nil, fmt.Errorf("%w: %s was removed", ErrGone, name)
	}
	return &info, nil
}

// ReadChunk reads the first chunk of object name (its chunks named nuid)
// at or after stream sequence from, and its sequence; an error that is
// ErrGone if there is none.
func ReadChunk(ctx context.Context, stream jetstream.Stream, bucket, name, nuid string, from uint64) ([]byte, uint64, error) {
	m, err := stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(chunkSubject(bucket, nuid)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, fmt.Errorf("%w: %s lacks chunks", ErrGone, name)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read payload object %s: %w", name, err)
	}
	return m.Data, m.Sequence, nil
}

// HeaderType is the header of an object's description that names the
// type of the job whose payload it is: conductord serves a host with a
// credential of its own the objects of its types only.
const HeaderType = "Conductor-Type"

// Reader reads payloads by reference from a Source, checking each
// against the size and digest its reference names. It is safe for
// concurrent use.
type Reader struct {
	src Source
	max int64
}

// NewReader returns a Reader of src that refuses payloads over max
// bytes.
func NewReader(src Source, max int64) *Reader {
	return &Reader{src: src, max: max}
}

// Read returns the payload ref names, checked against its size and
// digest. Errors for which Permanent is true say the job cannot run; any
// other may pass (the store away, a request lost).
func (r *Reader) Read(ctx context.Context, ref wire.PayloadRef) ([]byte, error) {
	if err := ref.Check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotMatching, err)
	}
	if ref.Size > r.max {
		return nil, fmt.Errorf("%w: %d bytes, over %d", ErrTooLarge, ref.Size, r.max)
	}
	info, err := r.src.Info(ctx, ref.Object)
	if err != nil {
		return nil, err
	}
	if int64(info.Size) != ref.Size || info.Digest != ref.Digest || info.NUID == "" {
		return nil, fmt.Errorf("%w: %s is %d bytes, %s", ErrNotMatching, ref.Object, info.Size, info.Digest)
	}
	data := make([]byte, 0, ref.Size)
	h := sha256.New()
	for seq := uint64(1); int64(len(data)) < ref.Size; {
		chunk, at, err := r.src.Chunk(ctx, ref.Object, info.NUID, seq)
		if errors.Is(err, ErrGone) {
			return nil, fmt.Errorf("%w: %s has %d of its %d bytes", ErrGone, ref.Object, len(data), ref.Size)
		}
		if err != nil {
			return nil, err
		}
		if int64(len(data)+len(chunk)) > ref.Size || len(chunk) == 0 || at < seq {
			return nil, fmt.Errorf("%w: %s has chunks past its %d bytes", ErrNotMatching, ref.Object, ref.Size)
		}
		h.Write(chunk)
		data = append(data, chunk...)
		seq = at + 1
	}
	if got := wire.DigestPrefix + base64.URLEncoding.EncodeToString(h.Sum(nil)); got != ref.Digest {
		return nil, fmt.Errorf("%w: %s reads as %s", ErrNotMatching, ref.Object, got)
	}
	return data, nil
}

// MaxSize bounds a payload passed by reference: conductord's limit at
// most, and what a host reads.
const MaxSize = 256 << 20
