//! The SMTP sink's maildir (aiosmtpd's `Mailbox` handler: one file per mail in `new/`, moved to
//! `cur/` by a reader): the Message-ID of every mail, counted, to tell missing and duplicated
//! mails. Other runs' and other people's mails are there too: callers filter by Message-ID.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bytes of a mail read for its headers.
const HEAD: u64 = 32 * 1024;

/// The Message-ID (without angle brackets) in a mail's header section; handles any case of the
/// header name and a value folded onto the next line.
pub fn message_id(mail: &str) -> Option<String> {
    let mut lines = mail.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            return None; // end of the headers
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("message-id") || name.starts_with([' ', '\t']) {
            continue;
        }
        let mut value = value.trim().to_string();
        while let Some(next) = lines.peek() {
            if next.starts_with([' ', '\t']) {
                value.push_str(next.trim());
                lines.next();
            } else {
                break;
            }
        }
        let v = value.trim().trim_start_matches('<').trim_end_matches('>');
        return (!v.is_empty()).then(|| v.to_string());
    }
    None
}

/// A file's name without maildir flags (`:2,S`): a mail moved from new/ to cur/ keeps it.
pub fn unique_name(file_name: &str) -> &str {
    file_name.split(':').next().unwrap_or(file_name)
}

/// Duplicates among `wanted`: the extra copies in all, and the ids that have more than one.
pub fn duplicates<'a>(
    counts: &HashMap<String, u32>,
    wanted: impl IntoIterator<Item = &'a String>,
) -> (u64, Vec<(String, u32)>) {
    let mut extra = 0;
    let mut ids = Vec::new();
    for id in wanted {
        if let Some(n) = counts.get(id).filter(|n| **n > 1) {
            extra += u64::from(n - 1);
            ids.push((id.clone(), *n));
        }
    }
    ids.sort();
    (extra, ids)
}

/// Scans a maildir incrementally (each file is read once).
pub struct Maildir {
    dir: PathBuf,
    /// Unique file name -> its Message-ID.
    seen: HashMap<String, Option<String>>,
}

impl Maildir {
    pub fn new(dir: &Path) -> Maildir {
        Maildir {
            dir: dir.to_path_buf(),
            seen: HashMap::new(),
        }
    }

    pub fn exists(&self) -> bool {
        self.dir.join("new").is_dir() || self.dir.join("cur").is_dir()
    }

    /// Read the files not seen yet.
    pub fn scan(&mut self) -> std::io::Result<()> {
        for sub in ["new", "cur"] {
            let dir = self.dir.join(sub);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let key = unique_name(&name).to_string();
                if self.seen.contains_key(&key) {
                    continue;
                }
                let head = match std::fs::File::open(entry.path()) {
                    Ok(f) => {
                        let mut buf = Vec::new();
                        f.take(HEAD).read_to_end(&mut buf)?;
                        String::from_utf8_lossy(&buf).into_owned()
                    }
                    // Moved to cur/ between the listing and the open: found there next time.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                self.seen.insert(key, message_id(&head));
            }
        }
        Ok(())
    }

    /// Mails per Message-ID.
    pub fn counts(&self) -> HashMap<String, u32> {
        let mut out: HashMap<String, u32> = HashMap::new();
        for id in self.seen.values().flatten() {
            *out.entry(id.clone()).or_default() += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_found_in_the_headers_only() {
        let mail = "From: noreply@pickple.local\r\nMessage-ID: <o1.order-confirmed@pickple.local>\r\nSubject: x\r\n\r\nbody\r\n";
        assert_eq!(
            message_id(mail).as_deref(),
            Some("o1.order-confirmed@pickple.local")
        );
        let lower = "subject: y\nmessage-id:\n <o2.delivery-started@pickple.local>\n\nbody";
        assert_eq!(
            message_id(lower).as_deref(),
            Some("o2.delivery-started@pickple.local")
        );
        let in_body = "Subject: z\n\nMessage-ID: <not-a-header@x>\n";
        assert_eq!(message_id(in_body), None);
        assert_eq!(
            unique_name("1700000000.M1P2Q3.host:2,S"),
            "1700000000.M1P2Q3.host"
        );
    }

    #[test]
    fn the_maildir_counts_each_file_once_and_duplicates_by_id() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let write = |sub: &str, name: &str, id: &str| {
            std::fs::write(
                dir.path().join(sub).join(name),
                format!("Message-ID: <{id}>\nSubject: s\n\nb\n"),
            )
            .unwrap();
        };
        write("new", "a", "o1.order-confirmed@pickple.local");
        write("new", "b", "o1.order-confirmed@pickple.local");
        write("cur", "c:2,S", "o2.order-confirmed@pickple.local");
        write("new", "d", "someone-else@example.com");
        let mut m = Maildir::new(dir.path());
        assert!(m.exists());
        m.scan().unwrap();
        // A file moved from new/ to cur/ is the same mail.
        std::fs::rename(dir.path().join("new/a"), dir.path().join("cur/a:2,S")).unwrap();
        m.scan().unwrap();
        let counts = m.counts();
        assert_eq!(counts["o1.order-confirmed@pickple.local"], 2);
        assert_eq!(counts["o2.order-confirmed@pickple.local"], 1);
        let wanted = [
            "o1.order-confirmed@pickple.local".to_string(),
            "o2.order-confirmed@pickple.local".to_string(),
            "o3.order-confirmed@pickple.local".to_string(),
        ];
        let (extra, ids) = duplicates(&counts, &wanted);
        assert_eq!(extra, 1);
        assert_eq!(ids, vec![("o1.order-confirmed@pickple.local".into(), 2)]);
        // Another run's duplicates are not ours.
        write("new", "e", "someone-else@example.com");
        m.scan().unwrap();
        assert_eq!(duplicates(&m.counts(), &wanted).0, 1);
    }
}
