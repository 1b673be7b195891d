package conductor_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// TestHostAccountDesign checks, on nats-server itself, the design that
// closes docs/security.md's first "Not yet" (a host shares its
// namespace's account): each host in an account of its own that imports
// from the namespace's account only what a host uses. It shows that
// workerd's JetStream use works through such imports, with an API prefix
// (an account without JetStream answers $JS.API itself), a streamed
// MSG.NEXT, acks, key-value reads, creates, updates and a watch (whose
// push deliveries come back by a stream import of the host's inbox); and
// that a pull's status answer aimed at the job stream's purge lands in
// the host's account, where no purge is imported, and purges nothing.
// The product does not use it yet: this is the next step's ground.
func TestHostAccountDesign(t *testing.T) {
	t.Parallel()
	data := server.NewAccount("DATA")
	host := server.NewAccount("HOST")
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true,
		Accounts: []*server.Account{data, host},
		Users:    []*server.User{{Username: "d", Password: "d", Account: data}, {Username: "h", Password: "h", Account: host}},
	}
	ns, err := server.NewServer(opts)
	require.NoError(t, err)
	ns.Start()
	t.Cleanup(ns.Shutdown)
	require.True(t, ns.ReadyForConnections(5*time.Second))
	da, _ := ns.LookupAccount("DATA")
	ha, _ := ns.LookupAccount("HOST")
	require.NoError(t, da.EnableJetStream(nil, nil))
	for _, s := range []string{"$JS.API.INFO", "$JS.API.STREAM.INFO.>", "$JS.API.CONSUMER.>", "$JS.API.DIRECT.GET.>", "$JS.API.STREAM.MSG.GET.>", "$JS.ACK.>", "$KV.>", "$JS.FC.>"} {
		rt := server.Singleton
		if s == "$JS.API.CONSUMER.>" {
			rt = server.Streamed
		}
		require.NoError(t, da.AddServiceExportWithResponse(s, rt, nil), s)
		from := s
		if len(s) > 8 && s[:8] == "$JS.API." {
			from = "JS.d.API." + s[8:]
		}
		require.NoError(t, ha.AddServiceImport(da, from, s), s)
		if s == "$KV.>" {
			require.NoError(t, ha.AddServiceImport(da, "JS.d.API.$KV.>", s), "kv pfx")
		}
	}
	require.NoError(t, da.AddStreamExport("_INBOX.h.>", nil))
	require.NoError(t, ha.AddStreamImport(da, "_INBOX.h.>", ""))

	dnc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("d", "d"))
	require.NoError(t, err)
	defer dnc.Close()
	djs, _ := jetstream.New(dnc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = djs.CreateStream(ctx, jetstream.StreamConfig{Name: "jobs", Subjects: []string{"jobs.*"}, Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	_, err = djs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "state"})
	require.NoError(t, err)
	_, err = djs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "cancel"})
	require.NoError(t, err)
	for range 3 {
		_, err = djs.Publish(ctx, "jobs.sq", []byte("1"))
		require.NoError(t, err)
	}

	hnc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("h", "h"), nats.CustomInboxPrefix("_INBOX.h"))
	require.NoError(t, err)
	defer hnc.Close()
	hjs, _ := jetstream.NewWithAPIPrefix(hnc, "JS.d.API")
	cons, err := hjs.CreateOrUpdateConsumer(ctx, "jobs", jetstream.ConsumerConfig{Durable: "pool-sq", FilterSubject: "jobs.sq", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err, "consumer create via import")
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(3*time.Second))
	require.NoError(t, err)
	n := 0
	for m := range batch.Messages() {
		require.NoError(t, m.DoubleAck(ctx), "ack via import")
		n++
	}
	require.NoError(t, batch.Error())
	require.Equal(t, 3, n)
	kv, err := hjs.KeyValue(ctx, "state")
	require.NoError(t, err, "kv open via import")
	rev, err := kv.Create(ctx, "j1", []byte("queued"))
	require.NoError(t, err, "kv create via import")
	_, err = kv.Update(ctx, "j1", []byte("running"), rev)
	require.NoError(t, err, "kv update via import")
	e, err := kv.Get(ctx, "j1")
	require.NoError(t, err)
	require.Equal(t, "running", string(e.Value()))
	ckv, err := hjs.KeyValue(ctx, "cancel")
	require.NoError(t, err)
	w, err := ckv.WatchAll(ctx)
	require.NoError(t, err, "watch via import")
	defer w.Stop()
	_, err = djs.Publish(ctx, "$KV.cancel.j9", []byte("x"))
	require.NoError(t, err)
	got := false
	for !got {
		select {
		case u := <-w.Updates():
			if u != nil && u.Key() == "j9" {
				got = true
			}
		case <-ctx.Done():
			t.Fatal("no watch update")
		}
	}
	// The attack: an empty pull's status answer aimed at the job stream's
	// purge, which purges it in a shared account. Here it lands in HOST,
	// where no purge is imported.
	_, err = djs.Publish(ctx, "jobs.other", []byte("2")) // a job the host has nothing to do with
	require.NoError(t, err)
	next := nats.NewMsg("JS.d.API.CONSUMER.MSG.NEXT.jobs.pool-sq")
	next.Reply, next.Data = "$JS.API.STREAM.PURGE.jobs", []byte(`{"batch":1,"no_wait":true}`)
	require.NoError(t, hnc.PublishMsg(next))
	// A pull after it, answered on the host's inbox, is answered after
	// it: the first was seen by then.
	b, err := cons.FetchNoWait(1)
	require.NoError(t, err)
	for range b.Messages() {
	}
	s, err := djs.Stream(ctx, "jobs")
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.State.Msgs, "the aimed answer purged the job stream")
}
