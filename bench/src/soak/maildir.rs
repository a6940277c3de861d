//! The SMTP sink's maildir (aiosmtpd's `Mailbox` handler: one file per mail in `new/`, moved to
//! `cur/` by a reader): the Message-ID of every mail, counted, to tell missing and duplicated
//! mails; and the confirmation mails of sign-ups (address, code), which the driver sends back.
//! Other runs' and other people's mails are there too: callers filter by Message-ID or address.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use pickple_schemas::confirmation_mail;

/// Bytes of a mail read (headers and body: our mails are far shorter).
const HEAD: u64 = 32 * 1024;

/// The earliest expiry of the code of a sign-up sent at `sent_at_ms`: the code expires a TTL
/// after the users processor took the sign-up, which is after it was sent (a minute of slack
/// for clocks). Mails to the address whose codes expire earlier are another run's.
pub fn earliest_expiry(sent_at_ms: i64) -> i64 {
    sent_at_ms + pickple_domain::user::CONFIRMATION_TTL_MS - 60_000
}

/// The value of header `name` (any case) in a mail's header section, unfolded.
pub fn header(mail: &str, name: &str) -> Option<String> {
    let mut lines = mail.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            return None; // end of the headers
        }
        let Some((n, value)) = line.split_once(':') else {
            continue;
        };
        if !n.trim().eq_ignore_ascii_case(name) || n.starts_with([' ', '\t']) {
            continue;
        }
        let mut value = value.trim().to_string();
        while let Some(next) = lines.peek() {
            if next.starts_with([' ', '\t']) {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(next.trim());
                lines.next();
            } else {
                break;
            }
        }
        return Some(value);
    }
    None
}

/// The Message-ID (without angle brackets) in a mail's header section; handles any case of the
/// header name and a value folded onto the next line.
pub fn message_id(mail: &str) -> Option<String> {
    let value = header(mail, "message-id")?;
    let v = value
        .replace([' ', '\t'], "")
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string();
    (!v.is_empty()).then_some(v)
}

/// The address of the `To:` header (`a@b`, `<a@b>` or `Name <a@b>`), lower-cased.
pub fn recipient(mail: &str) -> Option<String> {
    let to = header(mail, "to")?;
    let addr = match (to.rfind('<'), to.rfind('>')) {
        (Some(a), Some(b)) if a < b => &to[a + 1..b],
        _ => to.as_str(),
    };
    let addr = addr.trim().to_ascii_lowercase();
    (!addr.is_empty()).then_some(addr)
}

/// The body of a mail, decoded from its Content-Transfer-Encoding (quoted-printable, base64,
/// or none).
pub fn body(mail: &str) -> String {
    let raw = match (mail.find("\r\n\r\n"), mail.find("\n\n")) {
        (Some(a), Some(b)) if a < b => &mail[a + 4..],
        (_, Some(b)) => &mail[b + 2..],
        (Some(a), None) => &mail[a + 4..],
        (None, None) => "",
    };
    let encoding = header(mail, "content-transfer-encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bytes = match encoding.trim() {
        "quoted-printable" => {
            quoted_printable::decode(raw, quoted_printable::ParseMode::Robust).unwrap_or_default()
        }
        "base64" => {
            let packed: String = raw.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(packed)
                .unwrap_or_default()
        }
        _ => raw.as_bytes().to_vec(),
    };
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The code of a confirmation mail (its decoded body's `Confirmation code:` line).
pub fn confirmation_code(mail: &str) -> Option<String> {
    confirmation_mail::code(&body(mail))
}

/// The `expires_at` of a confirmation mail's Message-ID; `None` for any other mail.
pub fn confirmation_expiry(message_id: &str) -> Option<i64> {
    confirmation_mail::expiry(message_id)
}

/// A confirmation mail of a sign-up or an address change, as found in the maildir (one per
/// file: a copy sent again is a second one with the same Message-ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub message_id: String,
    /// Lower-cased.
    pub to: String,
    pub code: String,
    pub expires_at: i64,
}

impl Confirmation {
    /// Whether this is a mail to `to` (any case) whose code expires at `not_before` or later.
    pub fn is_for(&self, to: &str, not_before: i64) -> bool {
        self.to.eq_ignore_ascii_case(to) && self.expires_at >= not_before
    }
}

/// What a mail file holds that the soak needs.
#[derive(Debug, Clone, Default)]
struct Seen {
    message_id: Option<String>,
    confirmation: Option<Confirmation>,
}

fn read_mail(text: &str) -> Seen {
    let message_id = message_id(text);
    let confirmation = message_id.as_ref().and_then(|id| {
        Some(Confirmation {
            expires_at: confirmation_expiry(id)?,
            to: recipient(text)?,
            code: confirmation_code(text)?,
            message_id: id.clone(),
        })
    });
    Seen {
        message_id,
        confirmation,
    }
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
    /// Unique file name -> what it holds.
    seen: HashMap<String, Seen>,
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
                self.seen.insert(key, read_mail(&head));
            }
        }
        Ok(())
    }

    /// Mails per Message-ID.
    pub fn counts(&self) -> HashMap<String, u32> {
        let mut out: HashMap<String, u32> = HashMap::new();
        for id in self.seen.values().filter_map(|m| m.message_id.as_ref()) {
            *out.entry(id.clone()).or_default() += 1;
        }
        out
    }

    /// Every confirmation mail (each copy).
    pub fn confirmations(&self) -> Vec<Confirmation> {
        self.seen
            .values()
            .filter_map(|m| m.confirmation.clone())
            .collect()
    }

    /// The newest confirmation mail to `to` whose code expires at `not_before` or later (older
    /// ones are another run's).
    pub fn confirmation_to(&self, to: &str, not_before: i64) -> Option<Confirmation> {
        self.seen
            .values()
            .filter_map(|m| m.confirmation.as_ref())
            .filter(|c| c.is_for(to, not_before))
            .max_by_key(|c| c.expires_at)
            .cloned()
    }
}

/// The maildir shared by the tasks that wait for their confirmation mails: one scan at a time,
/// at most every [`SCAN_EVERY`], each task looking for its own address in what was read.
pub struct Watch {
    dir: tokio::sync::Mutex<(Maildir, Option<Instant>)>,
}

/// Least time between two scans of the shared maildir.
pub const SCAN_EVERY: Duration = Duration::from_millis(250);

impl Watch {
    pub fn new(dir: &Path) -> Watch {
        Watch {
            dir: tokio::sync::Mutex::new((Maildir::new(dir), None)),
        }
    }

    /// The confirmation mail to `to` for a sign-up sent at `sent_at_ms` (ms since the epoch),
    /// waiting for it up to `timeout`.
    pub async fn confirmation(
        &self,
        to: &str,
        sent_at_ms: i64,
        timeout: Duration,
    ) -> Result<Confirmation, String> {
        let not_before = earliest_expiry(sent_at_ms);
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut guard = self.dir.lock().await;
                let (maildir, scanned) = &mut *guard;
                if scanned.is_none_or(|at| at.elapsed() >= SCAN_EVERY) {
                    // The first scan reads every mail there is: off the runtime's workers.
                    let result = tokio::task::block_in_place(|| maildir.scan());
                    *scanned = Some(Instant::now());
                    if let Err(e) = result {
                        return Err(format!("reading {}: {e}", maildir.dir.display()));
                    }
                }
                if let Some(c) = maildir.confirmation_to(to, not_before) {
                    return Ok(c);
                }
                if !maildir.exists() {
                    return Err(format!(
                        "no maildir at {} (give --maildir)",
                        maildir.dir.display()
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("no confirmation mail to {to} within {timeout:?}"));
            }
            tokio::time::sleep(SCAN_EVERY).await;
        }
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
    fn confirmation_mails_give_their_address_and_code() {
        let code = "0123456789abcdef".repeat(4);
        // Quoted-printable as lettre writes it: the code's line is longer than 76 characters,
        // so a soft line break cuts through the code.
        let line = format!("Confirmation code: {code}");
        let (head, tail) = line.split_at(75);
        let qp = format!(
            "From: noreply@pickple.local\r\nTo: Ann1@Soak.Example.com\r\nSubject: Confirm your \r\n Pickple sign-up\r\n\
             Message-ID: <u-1.confirm-86401000@pickple.local>\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\nHello ann1,\r\n\r\n{head}=\r\n{tail}\r\n\r\n\
             (POST /api/v1/auth/confirm-email with {{\"username\": \"ann1\", \"code\": =3D\r\n\"{code}\"}})\r\n"
        );
        assert_eq!(confirmation_code(&qp).as_deref(), Some(code.as_str()));
        assert_eq!(recipient(&qp).as_deref(), Some("ann1@soak.example.com"));
        assert_eq!(
            header(&qp, "subject").as_deref(),
            Some("Confirm your Pickple sign-up")
        );
        let seen = read_mail(&qp).confirmation.unwrap();
        assert_eq!(seen.expires_at, 86_401_000);
        assert_eq!(seen.message_id, "u-1.confirm-86401000@pickple.local");
        // As the sink wrote one (LF line ends).
        let real = "From: noreply@pickple.local\nTo: buy4959.fb9f88d58f85@example.com\n\
            Subject: Confirm your Pickple sign-up\n\
            Message-ID: <da0a02fe-e198-49af-99a2-bbe50b5543fe.confirm-1796277501092@pickple.local>\n\
            Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\
            X-RcptTo: buy4959.fb9f88d58f85@example.com\n\nHello buy4959,\n\n\
            to use this address for your new Pickple account, send this code back withi=\n\
            n a day of the request:\n\n\
            Confirmation code: 8ac16c4895f91406da9be24a2939eb903cf4bda5a50a00d975c7ef1f=\n\
            22e8a016\n\n-- Pickple\n";
        let seen = read_mail(real).confirmation.unwrap();
        assert_eq!(
            seen.code,
            "8ac16c4895f91406da9be24a2939eb903cf4bda5a50a00d975c7ef1f22e8a016"
        );
        assert_eq!(seen.to, "buy4959.fb9f88d58f85@example.com");
        assert_eq!(seen.expires_at, 1_796_277_501_092);
        // Plain, and base64; a name with the address.
        let plain = format!("To: Ann <ann1@x.io>\n\nConfirmation code: {code}\n");
        assert_eq!(confirmation_code(&plain).as_deref(), Some(code.as_str()));
        assert_eq!(recipient(&plain).as_deref(), Some("ann1@x.io"));
        let b64 = "Content-Transfer-Encoding: base64\n\nQ29uZmlybWF0aW9uIGNvZGU6\nIGMwZmZlZQo=\n";
        assert_eq!(confirmation_code(b64).as_deref(), Some("c0ffee"));
        // An order's mail is no confirmation.
        assert_eq!(
            confirmation_expiry("o1.order-confirmed@pickple.local"),
            None
        );
        assert!(
            read_mail("Message-ID: <o1.order-confirmed@pickple.local>\n\nb\n")
                .confirmation
                .is_none()
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
        // Confirmation mails: the newest to an address, not older than asked.
        for (name, expires, code) in [("f", 100, "aa"), ("g", 200, "bb"), ("h", 200, "bb")] {
            std::fs::write(
                dir.path().join("new").join(name),
                format!(
                    "To: c1@soak.example.com\nMessage-ID: <u.confirm-{expires}@pickple.local>\n\nConfirmation code: {code}\n"
                ),
            )
            .unwrap();
        }
        m.scan().unwrap();
        assert_eq!(m.confirmations().len(), 3);
        let c = m.confirmation_to("C1@soak.example.com", 150).unwrap();
        assert_eq!((c.code.as_str(), c.expires_at), ("bb", 200));
        assert!(m.confirmation_to("c1@soak.example.com", 201).is_none());
        assert!(m.confirmation_to("c2@soak.example.com", 0).is_none());
    }
}
