// Package archive keeps the states of finished jobs, keyed by job id, for
// a retention period, in files whose memory cost does not grow with the
// number of states kept.
//
// # Segments
//
// A Store is a directory of segments, each a data file and, once sealed,
// an index file, named by a 16-digit hex sequence number:
//
//	0000000000000007.data    records, appended
//	0000000000000007.index   written once, when the segment is sealed
//
// Puts append to the one open segment, the newest. It is sealed after
// Config.SegmentStates records or Config.SegmentAge, whichever comes
// first (and at 1 GiB): its index is written and a new segment opened.
// Retention (Expire) drops sealed segments whole, oldest first.
//
// In memory the store holds, for the open segment, a map of its ids to
// their offsets (bounded by SegmentStates), and, for each sealed segment,
// a Bloom filter of its ids (10 bits a state, blocked: a test touches one
// cache line) and a few counters. Get looks in the open segment's map,
// then in the sealed segments newest first, skipping those whose filter
// says no (99% of them): a lookup reads one or two segments. In a sealed
// segment it reads a window of the index around where the id's hash
// should be (pread, no mmap), then the record.
//
// # Data file
//
// A 24-byte header ("CNDARCD1", the time the segment was opened, a
// CRC-32C), then records:
//
//	magic  uint32  0xC0DA7A5E
//	length uint32  of the body
//	crc    uint32  CRC-32C of length and body
//	body   ended int64 (Unix ns) | id length uint16 | id | state
//
// Integers are little-endian. Ids are at most MaxIDLen bytes, states at
// most MaxStateLen.
//
// # Index file
//
// A 64-byte header ("CNDARCI2", counts, the data file's size it covers,
// the oldest and newest end times, the CRC-32C of each part and of
// itself), the entries (hash of the id uint64, offset of its newest
// record uint32), sorted by hash, one per id, then the Bloom filter. The
// hash is FNV-1a finished by a 64-bit mixer, so that hashes spread evenly
// and a lookup can guess where to read. Open rebuilds the indexes of the
// first format ("CNDARCI1", whose filter was not blocked) without
// counting them as damage.
//
// # Guarantees
//
// Of the states put for one id, Get returns the newest that is kept. A
// Put that returned is read by every Get that starts after it. With
// Config.Sync, a Put that returned survives a crash of the machine;
// without it, of the process.
//
// Open repairs what a crash or a bad disk leaves, and never silently: a
// record cut by a crash at the end of a data file (a torn tail) is
// truncated away; a damaged record between intact ones is skipped (the
// magic number lets the reader find the next one); a missing or damaged
// index (each is checked whole) is rebuilt from its data file; a data
// file with a damaged header is renamed *.bad. Stats().Damage counts all
// of it, and Open logs one line, a warning if only indexes were rebuilt,
// else an error, saying what was lost and in which segments (and a line
// at Info for each repair). A record found damaged later, by a Get in a
// sealed data file (Open does not read those whole), is an ErrCorrupt
// error and counted too. Bad files make errors, never panics.
//
// A sealed segment's files are fsynced, and the directory, before it is
// used; a half-written index (*.tmp) is removed by Open. Only one process
// may use a directory at a time: Open locks it (flock on a file named
// LOCK) and returns ErrLocked if another Store holds it.
//
// # Concurrency
//
// One goroutine should Put; Put is safe from several, serialised. Gets
// run from any number of goroutines, during Puts and Expires: they hold
// the store's lock only to find the segments to read, and a reference
// that keeps a segment's files open while they read, even if Expire
// drops it meanwhile. The store starts no goroutine: its owner calls
// Expire, on a timer of its own.
package archive
