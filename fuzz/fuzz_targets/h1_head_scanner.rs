//! `framing::HeadScanner`, the raw HTTP/1 head scanner, fed one byte stream in pieces.
//!
//! Input layout: byte 0 = number of split points `n` (mod 16), byte 1 = head limit selector
//! (0 = 16 KiB, else 16 × selector bytes), then `n` little-endian u16 split offsets, then
//! the stream. Checks: no panic; `retained_bytes() <= max_head_bytes + 4` after every feed;
//! the same `HeadFacts` sequence whether the stream is fed whole, split at the given points,
//! or (when short) one byte at a time; and, when the scanner never stopped, also when the
//! heads are taken after every piece rather than at the end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::conn::framing::{HeadFacts, HeadScanner};

/// Longest stream also fed one byte at a time.
const BYTEWISE_MAX: usize = 1024;
/// More `next_head` calls than heads can ever wait: a scanner that still answers after this
/// many has stopped, and answers "refuse" forever.
const DRAIN_CAP: usize = 4096;

/// What a scan saw: the heads in order, and whether the scanner stopped.
#[derive(Debug, PartialEq, Eq)]
struct Scan {
    heads: Vec<HeadFacts>,
    stopped: bool,
}

fuzz_target!(|data: &[u8]| {
    let [count, limit, rest @ ..] = data else {
        return;
    };
    let count = usize::from(count % 16);
    let max_head_bytes = match limit {
        0 => 16 * 1024,
        n => 16 * usize::from(*n),
    };
    if rest.len() < 2 * count {
        return;
    }
    let (offsets, stream) = rest.split_at(2 * count);
    let mut cuts: Vec<usize> = offsets
        .chunks_exact(2)
        .map(|pair| usize::from(u16::from_le_bytes([pair[0], pair[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        pieces.push(&stream[start..cut]);
        start = cut;
    }
    pieces.push(&stream[start..]);

    let whole = scan(max_head_bytes, [stream], false);
    let split = scan(max_head_bytes, pieces.iter().copied(), false);
    assert_eq!(whole, split, "facts depend on where the stream was split");
    if stream.len() <= BYTEWISE_MAX {
        let bytewise = scan(max_head_bytes, stream.chunks(1), false);
        assert_eq!(whole, bytewise, "facts differ when fed one byte at a time");
    }
    // Taking heads as they complete holds fewer pending, so it cannot stop where the whole
    // run did not.
    if !whole.stopped {
        let eager = scan(max_head_bytes, pieces, true);
        assert_eq!(
            whole, eager,
            "facts differ when heads are taken after every piece"
        );
    }
});

/// Feed `pieces` in order, checking what is retained, and take the heads after every piece
/// (`eager`) or only at the end.
fn scan<'a>(
    max_head_bytes: usize,
    pieces: impl IntoIterator<Item = &'a [u8]>,
    eager: bool,
) -> Scan {
    let mut scanner = HeadScanner::new(max_head_bytes);
    let mut scan = Scan {
        heads: Vec::new(),
        stopped: false,
    };
    for piece in pieces {
        scanner.feed(piece);
        let retained = scanner.retained_bytes();
        assert!(
            retained <= max_head_bytes + 4,
            "retains {retained} bytes with a limit of {max_head_bytes}"
        );
        if eager && !scan.stopped {
            drain(&mut scanner, &mut scan);
        }
    }
    if !scan.stopped {
        drain(&mut scanner, &mut scan);
    }
    scan
}

/// Take waiting heads until there are none, or until the scanner shows it has stopped. A
/// stopped scanner's endless "refuse" answers are dropped from the end (with any real head
/// that looks the same, in every run alike).
fn drain(scanner: &mut HeadScanner, scan: &mut Scan) {
    for _ in 0..DRAIN_CAP {
        match scanner.next_head() {
            Some(head) => scan.heads.push(head),
            None => return,
        }
    }
    scan.stopped = true;
    while scan.heads.last().is_some_and(refuses_unseen) {
        scan.heads.pop();
    }
}

/// The shape of the facts a stopped scanner gives: ambiguous framing, no request line.
fn refuses_unseen(head: &HeadFacts) -> bool {
    head.ambiguous_framing && !head.fragment && head.describes("", None)
}
