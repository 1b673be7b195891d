package lookup

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotFound is the error of a Get of a key a lookup does not hold.
var ErrNotFound = errors.New("lookup: not found")

// notFound is the error of a get of key in lookup name, which it does
// not hold.
func notFound(name, key string) error { return fmt.Errorf("%w: %s/%.80q", ErrNotFound, name, key) }

// ErrTooMany is the error of a Keys of a lookup holding more than
// MaxKeys keys.
var ErrTooMany = errors.New("lookup: too many keys")

// Defaults of a Store's bounds.
const (
	DefaultMaxValue = 64 << 10
	DefaultMaxKeys  = 10_000
	DefaultMaxBytes = 1 << 30
)

// Config is a Store's.
type Config struct {
	// Bucket names the key-value bucket; created if it does not exist.
	Bucket string
	// Replicas and Storage are the bucket's: 1 and file storage by
	// default. Open makes a bucket that exists take Replicas (a stream
	// update, which a JetStream cluster allows); its storage cannot change.
	Replicas int
	Memory   bool
	// MaxValue bounds a value's bytes, compacted (DefaultMaxValue if 0).
	MaxValue int
	// MaxKeys bounds the keys Keys returns (DefaultMaxKeys if 0).
	MaxKeys int
	// MaxBytes bounds the bucket (DefaultMaxBytes if 0): past it, a set
	// of a new value is refused by the server, and says so.
	MaxBytes int64
}

// Store keeps named lookups in a JetStream key-value bucket. It is safe
// for concurrent use.
type Store struct {
	kv       jetstream.KeyValue
	maxValue int
	maxKeys  int
}

// Open returns the Store of cfg's bucket, creating the bucket if need
// be.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("lookup: no bucket named")
	}
	storage := jetstream.FileStorage
	if cfg.Memory {
		storage = jetstream.MemoryStorage
	}
	s := &Store{maxValue: cmp.Or(max(cfg.MaxValue, 0), DefaultMaxValue), maxKeys: cmp.Or(max(cfg.MaxKeys, 0), DefaultMaxKeys)}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       cfg.Bucket,
		Description:  "conductor lookups",
		Replicas:     max(cfg.Replicas, 1),
		Storage:      storage,
		MaxValueSize: int32(s.maxValue),
		MaxBytes:     cmp.Or(max(cfg.MaxBytes, 0), DefaultMaxBytes),
	})
	if err != nil {
		return nil, fmt.Errorf("lookup: open bucket %s: %w", cfg.Bucket, err)
	}
	s.kv = kv
	return s, nil
}

// Get returns the value of key in lookup name, and its revision; an error
// wrapping ErrNotFound if it holds none.
func (s *Store) Get(ctx context.Context, name, key string) (json.RawMessage, uint64, error) {
	if err := check(name, key); err != nil {
		return nil, 0, err
	}
	e, err := s.kv.Get(ctx, storedKey(name, key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, notFound(name, key)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("lookup: get %s/%.80q: %w", name, key, err)
	}
	return e.Value(), e.Revision(), nil
}

// Set sets key in lookup name to value, a JSON value (stored compact),
// creating the lookup if it holds nothing yet, and returns the new
// revision.
func (s *Store) Set(ctx context.Context, name, key string, value json.RawMessage) (uint64, error) {
	data, err := s.value(name, key, value)
	if err != nil {
		return 0, err
	}
	rev, err := s.kv.Put(ctx, storedKey(name, key), data)
	if err != nil {
		return 0, fmt.Errorf("lookup: set %s/%.80q: %w", name, key, err)
	}
	return rev, nil
}

// value checks name, key and value, and returns value compacted.
func (s *Store) value(name, key string, value json.RawMessage) ([]byte, error) {
	if err := check(name, key); err != nil {
		return nil, err
	}
	if len(value) > 4*s.maxValue {
		return nil, fmt.Errorf("%w value of %s/%.80q: %d bytes, more than %d", ErrInvalid, name, key, len(value), s.maxValue)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, value); err != nil {
		return nil, fmt.Errorf("%w value of %s/%.80q: not JSON: %v", ErrInvalid, name, key, err)
	}
	if buf.Len() > s.maxValue {
		return nil, fmt.Errorf("%w value of %s/%.80q: %d bytes, more than %d", ErrInvalid, name, key, buf.Len(), s.maxValue)
	}
	if !utf8.Valid(buf.Bytes()) {
		return nil, fmt.Errorf("%w value of %s/%.80q: not valid UTF-8 JSON", ErrInvalid, name, key)
	}
	return buf.Bytes(), nil
}

// Delete removes key from lookup name; deleting a key it does not hold
// is no error.
func (s *Store) Delete(ctx context.Context, name, key string) error {
	if err := check(name, key); err != nil {
		return err
	}
	// Only a key held: a delete of one that is not would leave a marker
	// in the bucket all the same, and many such would grow it.
	if _, err := s.kv.Get(ctx, storedKey(name, key)); errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err := s.kv.Delete(ctx, storedKey(name, key)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("lookup: delete %s/%.80q: %w", name, key, err)
	}
	return nil
}

// Keys returns the keys lookup name holds, sorted; an error wrapping
// ErrTooMany past MaxKeys (Watch follows a lookup of any size).
func (s *Store) Keys(ctx context.Context, name string) ([]string, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	lister, err := s.kv.ListKeysFiltered(ctx, name+".>")
	if err != nil {
		return nil, fmt.Errorf("lookup: list %s: %w", name, err)
	}
	defer func() { _ = lister.Stop() }()
	var keys []string
	for k := range lister.Keys() {
		if _, key, ok := splitKey(k); ok {
			if len(keys) == s.maxKeys {
				return nil, fmt.Errorf("%w: lookup %s holds more than %d keys", ErrTooMany, name, s.maxKeys)
			}
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	return keys, nil
}

// Change is one change of a lookup's key, as Watch tells it.
type Change struct {
	Name, Key string
	// Value is the key's new value; nil if it was deleted.
	Value    json.RawMessage
	Revision uint64
}

// Watch follows lookup name ("" for every lookup): first every key it
// holds, then each change, until ctx ends; the channel is closed then.
// Loaded is called once the keys held when it began have all been sent.
func (s *Store) Watch(ctx context.Context, name string, loaded func()) (<-chan Change, error) {
	filter := ">"
	if name != "" {
		if err := checkName(name); err != nil {
			return nil, err
		}
		filter = name + ".>"
	}
	w, err := s.kv.Watch(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("lookup: watch %s: %w", name, err)
	}
	out := make(chan Change, 64)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil { // the keys held are all sent
					if loaded != nil {
						loaded()
					}
					continue
				}
				n, key, ok := splitKey(e.Key())
				if !ok {
					continue
				}
				c := Change{Name: n, Key: key, Revision: e.Revision()}
				if e.Operation() == jetstream.KeyValuePut {
					c.Value = e.Value()
				}
				select {
				case out <- c:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// Seed sets the keys of lookups (name -> key -> value, any value that
// encodes to JSON) that the store has never held, or all of none if one
// is refused: what a restart finds set since (by workers, by hand), or
// deleted since, is kept.
func (s *Store) Seed(ctx context.Context, lookups map[string]map[string]any) error {
	type seed struct {
		key  string
		data []byte
	}
	var seeds []seed
	for name, keys := range lookups {
		for key, v := range keys {
			raw, err := json.Marshal(v)
			if err != nil {
				return fmt.Errorf("%w value of %s/%.80q: %v", ErrInvalid, name, key, err)
			}
			data, err := s.value(name, key, raw)
			if err != nil {
				return err
			}
			seeds = append(seeds, seed{storedKey(name, key), data})
		}
	}
	for _, sd := range seeds {
		// Revision 0: the key has no entry at all, not even a delete's.
		if _, err := s.kv.Update(ctx, sd.key, sd.data, 0); err != nil && !isWrongLast(err) {
			return fmt.Errorf("lookup: seed %s: %w", sd.key, err)
		}
	}
	return nil
}

// isWrongLast reports whether err is the server's refusal of a write that
// expected another last revision of its key.
func isWrongLast(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.As(err, &api) && api.ErrorCode == jsErrWrongLast
}

// jsErrWrongLast is JetStream's error code of a wrong last sequence of a
// subject.
const jsErrWrongLast = 10071

// SeedFile seeds the store (Seed) from a JSON file of the lookups:
// {"name": {"key": value, …}, …}.
func (s *Store) SeedFile(ctx context.Context, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("lookup: seed file: %w", err)
	}
	var lookups map[string]map[string]json.RawMessage
	if err := json.Unmarshal(data, &lookups); err != nil {
		return fmt.Errorf("lookup: seed file %s: %w", path, err)
	}
	seeds := make(map[string]map[string]any, len(lookups))
	for name, keys := range lookups {
		seeds[name] = make(map[string]any, len(keys))
		for k, v := range keys {
			seeds[name][k] = v
		}
	}
	return s.Seed(ctx, seeds)
}

// check checks a name and a key.
func check(name, key string) error {
	if err := checkName(name); err != nil {
		return err
	}
	return checkKey(key)
}
