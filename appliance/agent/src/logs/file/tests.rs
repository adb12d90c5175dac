use super::*;
use std::io::Write;
use watchgrid_logstore::MAX_MESSAGE;

fn append(path: &Path, text: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(text).expect("append");
}

fn inode(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").ino()
}

/// Every line available now (rotation takes two polls, so a few empty polls).
fn drain(src: &mut FileSource) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut idle = 0;
    while idle < 3 {
        match src.poll_line().expect("poll") {
            Some((r, pos)) => {
                idle = 0;
                out.push((r.message, pos));
            }
            None => idle += 1,
        }
    }
    out
}

fn messages(lines: &[(String, String)]) -> Vec<&str> {
    lines.iter().map(|(m, _)| m.as_str()).collect()
}

#[test]
fn follows_appends_and_waits_for_an_unfinished_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.log");
    append(&path, b"one\ntwo\r\n");
    let mut src = FileSource::new(&path, None);
    let ino = inode(&path);
    let got = drain(&mut src);
    assert_eq!(messages(&got), ["one", "two"], "from the start, CR dropped");
    assert_eq!(got[0].1, format!("{ino}:4"));
    assert_eq!(got[1].1, format!("{ino}:9"));
    append(&path, b"thr");
    assert!(
        drain(&mut src).is_empty(),
        "a line without its newline waits"
    );
    assert_eq!(src.position(), Some(format!("{ino}:9")));
    append(&path, b"ee\n");
    assert_eq!(messages(&drain(&mut src)), ["three"]);
    let (r, _) = {
        append(&path, b"four\n");
        src.poll_line().expect("poll").expect("a line")
    };
    assert_eq!(
        (r.source.as_str(), r.unit, r.priority),
        (src.name(), None, None)
    );
    assert!(Path::new(&r.source).is_absolute());
    assert!(r.ts_us > 1_600_000_000_000_000);
}

#[test]
fn a_missing_file_is_waited_for_and_then_read_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("later.log");
    let mut src = FileSource::new(&path, None);
    assert!(drain(&mut src).is_empty());
    assert_eq!(src.position(), None);
    append(&path, b"first\n");
    assert_eq!(messages(&drain(&mut src)), ["first"]);
}

#[test]
fn rotation_by_rename_finishes_the_old_file_then_reads_the_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.log");
    append(&path, b"a1\na2\n");
    let mut src = FileSource::new(&path, None);
    assert_eq!(messages(&drain(&mut src)), ["a1", "a2"]);
    append(&path, b"a3\na4 unfinished");
    fs::rename(&path, dir.path().join("auth.log.1")).expect("rename");
    // The writer still has the old file open for a moment.
    append(&dir.path().join("auth.log.1"), b" and done\n");
    append(&path, b"b1\n");
    let new = inode(&path);
    let got = drain(&mut src);
    assert_eq!(messages(&got), ["a3", "a4 unfinished and done", "b1"]);
    assert_eq!(got[2].1, format!("{new}:3"));
}

#[test]
fn an_unfinished_last_line_of_a_rotated_file_is_handed_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.log");
    append(&path, b"done\nhalf");
    let mut src = FileSource::new(&path, None);
    assert_eq!(messages(&drain(&mut src)), ["done"]);
    fs::rename(&path, dir.path().join("x.log.1")).expect("rename");
    append(&path, b"new\n");
    let new = inode(&path);
    let got = drain(&mut src);
    assert_eq!(messages(&got), ["half", "new"]);
    assert_eq!(got[0].1, format!("{new}:0"), "after it comes the new file");
}

#[test]
fn copytruncate_starts_over_at_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.log");
    append(&path, b"old line 1\nold line 2\n");
    let mut src = FileSource::new(&path, None);
    assert_eq!(drain(&mut src).len(), 2);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    append(&path, b"new\n");
    let got = drain(&mut src);
    assert_eq!(messages(&got), ["new"]);
    assert_eq!(got[0].1, format!("{}:4", inode(&path)));
}

#[test]
fn a_restart_from_a_saved_position_neither_repeats_nor_skips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.log");
    append(&path, b"l1\nl2\nl3\nl4\n");
    let mut src = FileSource::new(&path, None);
    let (_, saved) = src.poll_line().expect("poll").expect("l1");
    let (_, saved2) = src.poll_line().expect("poll").expect("l2");
    assert_ne!(saved, saved2);
    drop(src);
    append(&path, b"l5\nl6 unfin");
    let mut src = FileSource::new(&path, Some(&saved2));
    assert_eq!(src.position().as_deref(), Some(saved2.as_str()));
    let got = drain(&mut src);
    assert_eq!(messages(&got), ["l3", "l4", "l5"]);
    // Restarting with the unfinished line pending reads it whole once it ends.
    let saved = got[2].1.clone();
    drop(src);
    append(&path, b"ished\n");
    let mut src = FileSource::new(&path, Some(&saved));
    assert_eq!(messages(&drain(&mut src)), ["l6 unfinished"]);
}

#[test]
fn a_restart_after_a_rotation_while_stopped_finishes_the_old_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.log");
    append(&path, b"o1\no2\no3\n");
    let mut src = FileSource::new(&path, None);
    let (_, saved) = src.poll_line().expect("poll").expect("o1");
    drop(src);
    fs::rename(&path, dir.path().join("auth.log.1")).expect("rename");
    append(&path, b"n1\n");
    let mut src = FileSource::new(&path, Some(&saved));
    assert_eq!(messages(&drain(&mut src)), ["o2", "o3", "n1"]);
    // Gone altogether (compressed, deleted): the new file is read from its start.
    drop(src);
    fs::remove_file(dir.path().join("auth.log.1")).expect("rm");
    let mut src = FileSource::new(&path, Some(&saved));
    assert_eq!(messages(&drain(&mut src)), ["n1"]);
    // Truncated while stopped: from the start.
    let mut src = FileSource::new(&path, Some(&format!("{}:999", inode(&path))));
    assert_eq!(messages(&drain(&mut src)), ["n1"]);
}

#[test]
fn a_one_mib_line_ships_truncated_and_the_next_line_is_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.log");
    let mut big = vec![b'q'; 1 << 20];
    big.push(b'\n');
    big.extend_from_slice(b"next\n");
    append(&path, &big);
    let mut src = FileSource::new(&path, None);
    let (r, pos) = src.poll_line().expect("poll").expect("the big line");
    assert!(r.truncated);
    assert_eq!(r.message.len(), MAX_MESSAGE);
    assert_eq!(pos, format!("{}:{}", inode(&path), (1 << 20) + 1));
    let (r, _) = src.poll_line().expect("poll").expect("next");
    assert_eq!((r.message.as_str(), r.truncated), ("next", false));
    // The kept part of a line never grows past the cap while it waits for its end.
    append(&path, &vec![b'w'; 3 * CHUNK]);
    assert!(src.poll_line().expect("poll").is_none());
    let kept = src.reading.as_ref().map_or(0, |r| r.line.len());
    assert!(kept <= INPUT_CAP, "{kept}");
}

#[test]
fn positions_parse_back() {
    assert_eq!(parse_position("12:34"), Some((12, 34)));
    assert_eq!(parse_position(&format_position(1, 2)), Some((1, 2)));
    for bad in ["", "12", "a:1", "1:-1", "s=abc;i=1"] {
        assert_eq!(parse_position(bad), None, "{bad}");
    }
}

#[tokio::test]
async fn next_waits_for_a_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("async.log");
    let mut src = FileSource::new(&path, None);
    let writer = {
        let path = path.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            append(&path, b"hello\n");
        })
    };
    let (r, _) = tokio::time::timeout(Duration::from_secs(5), src.next())
        .await
        .expect("in time")
        .expect("a line");
    assert_eq!(r.message, "hello");
    writer.await.expect("writer");
}
