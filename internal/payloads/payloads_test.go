package payloads_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/payloads"
	"github.com/conductor-run/conductor/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const bucket = "conductor-t-payloads"

func setup(t *testing.T) (jetstream.JetStream, jetstream.ObjectStore, jetstream.Stream) {
	t.Helper()
	nc := natstest.Conn(t, natstest.Server(t))
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: bucket})
	require.NoError(t, err)
	stream, err := js.Stream(ctx, payloads.StreamName(bucket))
	require.NoError(t, err)
	return js, obs, stream
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestPutRead_RoundTrip(t *testing.T) {
	js, obs, _ := setup(t)
	ctx := context.Background()
	r := payloads.NewReader(payloads.StreamSource(payloads.NewBucket(js, bucket)), 8<<20)
	for _, n := range []int{1, payloads.ChunkSize - 1, payloads.ChunkSize, payloads.ChunkSize + 1, 3*payloads.ChunkSize + 17} {
		data := randomBytes(n)
		ref, err := payloads.Put(ctx, payloads.NewBucket(js, bucket), "squares", "job1", data)
		require.NoError(t, err)
		require.Equal(t, int64(n), ref.Size)
		got, err := r.Read(ctx, ref)
		require.NoError(t, err, "size %d", n)
		require.True(t, bytes.Equal(data, got), "size %d: the payload read differs", n)
		// Laid out as the object store lays an object out: its own reader
		// (the nats CLI's) reads it, digest checked.
		viaStore, err := obs.GetBytes(ctx, ref.Object)
		require.NoError(t, err, "size %d", n)
		require.True(t, bytes.Equal(data, viaStore), "size %d: the object store reads another payload", n)
	}
}

func TestPut_TwoSubmissionsOfOneJobKeepTheirOwnObjects(t *testing.T) {
	js, _, _ := setup(t)
	ctx := context.Background()
	a, err := payloads.Put(ctx, payloads.NewBucket(js, bucket), "squares", "job1", []byte(`"first"`))
	require.NoError(t, err)
	b, err := payloads.Put(ctx, payloads.NewBucket(js, bucket), "squares", "job1", []byte(`"second"`))
	require.NoError(t, err)
	require.NotEqual(t, a.Object, b.Object)
	got, err := payloads.NewReader(payloads.StreamSource(payloads.NewBucket(js, bucket)), 1<<20).Read(ctx, a)
	require.NoError(t, err)
	require.Equal(t, `"first"`, string(got))
}

func TestRead_Refusals(t *testing.T) {
	js, obs, stream := setup(t)
	ctx := context.Background()
	data := randomBytes(2*payloads.ChunkSize + 5)
	ref, err := payloads.Put(ctx, payloads.NewBucket(js, bucket), "squares", "job1", data)
	require.NoError(t, err)
	r := payloads.NewReader(payloads.StreamSource(payloads.NewBucket(js, bucket)), 8<<20)

	for name, c := range map[string]struct {
		ref  wire.PayloadRef
		want error
	}{
		"another size":     {wire.PayloadRef{Object: ref.Object, Size: ref.Size - 1, Digest: ref.Digest}, payloads.ErrNotMatching},
		"another digest":   {wire.PayloadRef{Object: ref.Object, Size: ref.Size, Digest: wire.DigestPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}, payloads.ErrNotMatching},
		"no such object":   {wire.PayloadRef{Object: "nope", Size: ref.Size, Digest: ref.Digest}, payloads.ErrGone},
		"not a reference":  {wire.PayloadRef{Object: "", Size: 1, Digest: ref.Digest}, payloads.ErrNotMatching},
		"over the limit":   {wire.PayloadRef{Object: ref.Object, Size: 9 << 20, Digest: ref.Digest}, payloads.ErrTooLarge},
		"negative size":    {wire.PayloadRef{Object: ref.Object, Size: -1, Digest: ref.Digest}, payloads.ErrNotMatching},
		"digest malformed": {wire.PayloadRef{Object: ref.Object, Size: ref.Size, Digest: "md5=x"}, payloads.ErrNotMatching},
	} {
		_, err := r.Read(ctx, c.ref)
		require.ErrorIs(t, err, c.want, name)
		require.True(t, payloads.Permanent(err), name)
	}

	// A chunk written over by a writer of the bucket: its size and its
	// description stay, its bytes change, and the digest tells.
	info, err := obs.GetInfo(ctx, ref.Object)
	require.NoError(t, err)
	chunk, err := stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject("$O."+bucket+".C."+info.NUID))
	require.NoError(t, err)
	forged := bytes.Clone(chunk.Data)
	forged[0] ^= 0xff
	_, err = js.PublishMsg(ctx, &nats.Msg{Subject: chunk.Subject, Data: forged})
	require.NoError(t, err)
	require.NoError(t, stream.DeleteMsg(ctx, chunk.Sequence))
	_, err = r.Read(ctx, ref)
	require.ErrorIs(t, err, payloads.ErrNotMatching)
}

func TestDelete_LeavesNothing(t *testing.T) {
	js, _, stream := setup(t)
	ctx := context.Background()
	ref, err := payloads.Put(ctx, payloads.NewBucket(js, bucket), "squares", "job1", randomBytes(3*payloads.ChunkSize))
	require.NoError(t, err)
	require.NoError(t, payloads.Delete(ctx, payloads.NewBucket(js, bucket), ref.Object))
	_, err = payloads.NewReader(payloads.StreamSource(payloads.NewBucket(js, bucket)), 8<<20).Read(ctx, ref)
	require.ErrorIs(t, err, payloads.ErrGone)
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "messages left in the bucket's stream")
	// Twice is no error, nor is an object never written.
	require.NoError(t, payloads.Delete(ctx, payloads.NewBucket(js, bucket), ref.Object))
	require.NoError(t, payloads.Delete(ctx, payloads.NewBucket(js, bucket), "never"))
}

func TestRead_ObjectCutShortIsGone(t *testing.T) {
	js, obs, stream := setup(t)
	ctx := context.Background()
	ref, err := payloads.Put(ctx, payloads.NewBucket(js, bucket), "squares", "job1", randomBytes(3*payloads.ChunkSize))
	require.NoError(t, err)
	info, err := obs.GetInfo(ctx, ref.Object)
	require.NoError(t, err)
	last, err := stream.GetLastMsgForSubject(ctx, "$O."+bucket+".C."+info.NUID)
	require.NoError(t, err)
	require.NoError(t, stream.DeleteMsg(ctx, last.Sequence))
	_, err = payloads.NewReader(payloads.StreamSource(payloads.NewBucket(js, bucket)), 8<<20).Read(ctx, ref)
	require.ErrorIs(t, err, payloads.ErrGone)
}

func TestRead_NoBucketIsNotPermanent(t *testing.T) {
	nc := natstest.Conn(t, natstest.Server(t))
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ref := wire.PayloadRef{Object: "x", Size: 1, Digest: wire.DigestPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}
	_, err = payloads.NewReader(payloads.StreamSource(payloads.NewBucket(js, bucket)), 1<<20).Read(context.Background(), ref)
	require.Error(t, err)
	require.False(t, payloads.Permanent(err), "a bucket not made yet may be made: %v", err)
	require.False(t, errors.Is(err, payloads.ErrGone))
}
