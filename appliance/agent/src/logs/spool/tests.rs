use super::*;

const CAP: u64 = 1 << 20;

fn open(dir: &Path) -> Spool<String> {
    Spool::open(dir.join("spool"), CAP).expect("open spool")
}

fn items(from: usize, to: usize, size: usize) -> Vec<String> {
    (from..to)
        .map(|i| format!("{i:08}{}", "x".repeat(size)))
        .collect()
}

fn pos(source: &str, at: &str) -> Vec<(String, String)> {
    vec![(source.to_string(), at.to_string())]
}

fn seqs(s: &Spool<String>) -> Vec<u64> {
    s.peek(usize::MAX, usize::MAX)
        .expect("peek")
        .into_iter()
        .map(|(seq, _)| seq)
        .collect()
}

fn segment_files(dir: &Path) -> usize {
    list_segments(&dir.join("spool")).expect("list").len()
}

#[test]
fn seqs_continue_across_reopen_and_after_everything_was_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    assert_eq!(s.append(items(0, 3, 1), &[]).expect("append"), Some((1, 3)));
    assert_eq!(s.append(items(3, 5, 1), &[]).expect("append"), Some((4, 5)));
    drop(s);
    let mut s = open(dir.path());
    assert_eq!(seqs(&s), vec![1, 2, 3, 4, 5]);
    assert_eq!(s.append(items(5, 6, 1), &[]).expect("append"), Some((6, 6)));
    s.ack(6).expect("ack");
    // The segment still taking appends stays until it is full.
    assert_eq!(s.pending(), 0);
    drop(s);
    let mut s = open(dir.path());
    assert_eq!(
        (s.bytes(), segment_files(dir.path())),
        (0, 0),
        "every segment deleted"
    );
    assert_eq!(s.last_seq(), 6);
    assert_eq!(s.append(items(6, 7, 1), &[]).expect("append"), Some((7, 7)));
    let got = s.peek(10, usize::MAX).expect("peek");
    assert_eq!(got, vec![(7, items(6, 7, 1).remove(0))]);
}

#[test]
fn ack_deletes_whole_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    // 128 KiB segments at a 1 MiB cap: 40 appends of 10 KiB make several.
    for b in 0..40 {
        s.append(items(b * 2, b * 2 + 2, 5_000), &[])
            .expect("append");
    }
    assert_eq!(s.pending(), 80);
    let before = segment_files(dir.path());
    assert!(before > 3, "{before} segments");
    s.ack(50).expect("ack");
    assert_eq!(s.pending(), 30);
    assert!(segment_files(dir.path()) < before);
    assert_eq!(seqs(&s), (51..=80).collect::<Vec<_>>());
    // An old acknowledgement changes nothing; one past the end counts as the end.
    s.ack(10).expect("ack");
    assert_eq!(s.pending(), 30);
    drop(s);
    let mut s = open(dir.path());
    assert_eq!(
        seqs(&s),
        (51..=80).collect::<Vec<_>>(),
        "the ack was persisted"
    );
    s.ack(u64::MAX).expect("ack");
    assert_eq!((s.pending(), segment_files(dir.path())), (0, 0));
    assert_eq!(
        s.append(items(0, 1, 1), &[]).expect("append"),
        Some((81, 81))
    );
}

#[test]
fn a_full_spool_drops_the_oldest_counts_them_and_keeps_the_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    let mut total = 0;
    for b in 0..200 {
        s.append(items(b * 5, b * 5 + 5, 2_000), &[])
            .expect("append");
        total += 5;
        assert!(s.bytes() <= CAP, "{} bytes", s.bytes());
    }
    assert!(s.dropped() > 0);
    assert_eq!(s.pending() + s.dropped(), total);
    let kept = seqs(&s);
    assert_eq!(kept.last(), Some(&total), "the newest are kept");
    assert_eq!(kept[0], s.dropped() + 1, "the oldest went");
    let dropped = s.dropped();
    drop(s);
    let s = open(dir.path());
    assert_eq!((s.dropped(), s.pending()), (dropped, total - dropped));
    assert_eq!(seqs(&s), kept);
}

#[test]
fn an_append_larger_than_the_cap_keeps_its_newest_items() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    s.append(items(0, 10, 1_000), &[]).expect("append");
    let (first, last) = s
        .append(items(10, 40, 64 << 10), &pos("journal", "c"))
        .expect("append")
        .expect("some kept");
    assert!(s.bytes() <= CAP);
    assert_eq!(first, 11, "seqs are only given to what is stored");
    assert!(last < 40 && last > 20, "{last}");
    let kept = s.peek(usize::MAX, usize::MAX).expect("peek");
    assert_eq!(kept.last().map(|(_, i)| &i[..8]), Some("00000039"));
    assert_eq!(s.dropped(), 10 + (30 - (last - first + 1)));
    assert_eq!(s.position("journal").as_deref(), Some("c"));
}

#[test]
fn a_torn_tail_is_ignored_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    s.append(items(0, 3, 10), &pos("f", "1:30"))
        .expect("append");
    drop(s);
    // A crash during the next append: an item line without its commit, then half a line.
    let (_, path) = list_segments(&dir.path().join("spool"))
        .expect("list")
        .pop()
        .expect("a segment");
    let committed = fs::metadata(&path).expect("stat").len();
    let mut f = OpenOptions::new().append(true).open(&path).expect("open");
    f.write_all(b"{\"seq\":4,\"item\":\"torn\"}\n{\"commit\":{\"last_se")
        .expect("write");
    drop(f);
    let mut s = open(dir.path());
    assert_eq!(seqs(&s), vec![1, 2, 3]);
    assert_eq!(
        s.position("f").as_deref(),
        Some("1:30"),
        "the torn batch's positions never counted"
    );
    assert_eq!(
        fs::metadata(&path).expect("stat").len(),
        committed,
        "cut off"
    );
    assert_eq!(
        s.append(items(3, 4, 10), &[]).expect("append"),
        Some((4, 4))
    );
    drop(s);
    let s = open(dir.path());
    assert_eq!(seqs(&s), vec![1, 2, 3, 4]);
}

#[test]
fn positions_are_restored_with_exactly_the_items_they_follow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    assert_eq!(s.position("journal"), None);
    s.append(items(0, 2, 10), &pos("journal", "s=a;i=2"))
        .expect("append");
    let both = [
        ("journal".to_string(), "s=a;i=5".to_string()),
        ("/var/log/x".to_string(), "77:120".to_string()),
    ];
    s.append(items(2, 4, 10), &both).expect("append");
    // A crash right after the append returned: nothing else is called.
    drop(s);
    let mut s = open(dir.path());
    assert_eq!(s.position("journal").as_deref(), Some("s=a;i=5"));
    assert_eq!(s.position("/var/log/x").as_deref(), Some("77:120"));
    assert_eq!(seqs(&s), vec![1, 2, 3, 4]);
    // Positions outlive the segments that carried them.
    s.ack(4).expect("ack");
    s.append(Vec::new(), &pos("journal", "s=a;i=9"))
        .expect("positions only");
    s.ack(4).expect("ack");
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.position("journal").as_deref(), Some("s=a;i=9"));
    assert_eq!(s.position("/var/log/x").as_deref(), Some("77:120"));
    assert_eq!(s.pending(), 0);
}

#[test]
fn an_append_with_nothing_new_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    assert_eq!(s.append(Vec::new(), &[]).expect("append"), None);
    assert_eq!(s.bytes(), 0);
    s.append(Vec::new(), &pos("f", "1:0")).expect("append");
    let bytes = s.bytes();
    assert!(bytes > 0);
    assert_eq!(
        s.append(Vec::new(), &pos("f", "1:0")).expect("append"),
        None
    );
    assert_eq!(s.bytes(), bytes);
}

#[test]
fn peek_honours_its_limits_and_returns_at_least_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    for b in 0..10 {
        s.append(items(b * 10, b * 10 + 10, 100), &[])
            .expect("append");
    }
    let got = s.peek(7, usize::MAX).expect("peek");
    assert_eq!(got.len(), 7);
    assert_eq!(got[6].0, 7);
    let got = s.peek(1000, 1).expect("peek");
    assert_eq!(got.len(), 1, "one item even above max_bytes");
    let got = s.peek(1000, 1_000).expect("peek");
    assert!(got.len() > 1 && got.len() < 10, "{}", got.len());
    // Acking what was peeked and peeking again continues exactly after it (the
    // resume hint must not skip or repeat).
    let mut next = 1;
    while s.pending() > 0 {
        let got = s.peek(13, usize::MAX).expect("peek");
        assert_eq!(got[0].0, next);
        next = got[got.len() - 1].0 + 1;
        s.ack(next - 1).expect("ack");
    }
    assert_eq!(next, 101);
}

#[test]
fn the_spool_is_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    s.append(items(0, 1, 1), &pos("f", "1:1")).expect("append");
    s.ack(1).expect("ack");
    s.append(items(1, 2, 1), &[]).expect("append");
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("spool")), 0o700);
    for entry in fs::read_dir(dir.path().join("spool")).expect("read_dir") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}
