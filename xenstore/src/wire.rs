//! Messages of the xenstore wire protocol (`xen/io/xs_wire.h`): a 16-byte
//! `xsd_sockmsg` header in native byte order, then `len <= 4096` bytes of payload.

use std::io::{self, Read};
use xenio_xen_sys::xs_wire::{XENSTORE_PAYLOAD_MAX, XSD_ERRORS, XsdSockmsg, XsdSockmsgType};

/// One message, either direction: the header fields and the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// `XS_*` ([`XsdSockmsgType`] as `u32`; unknown values are kept as they came).
    pub type_: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0: none).
    pub tx_id: u32,
    /// The payload (generally NUL-terminated strings).
    pub payload: Vec<u8>,
}

impl Message {
    /// A message of a known type.
    pub fn new(ty: XsdSockmsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Self {
        Message {
            type_: ty as u32,
            req_id,
            tx_id,
            payload,
        }
    }

    /// The type, if it is one `xs_wire.h` defines.
    pub fn kind(&self) -> Option<XsdSockmsgType> {
        XsdSockmsgType::try_from(self.type_).ok()
    }

    /// The header this message is sent with.
    pub fn header(&self) -> XsdSockmsg {
        XsdSockmsg {
            type_: self.type_,
            req_id: self.req_id,
            tx_id: self.tx_id,
            // Payloads are built by xenio and bounded by XENSTORE_PAYLOAD_MAX (or
            // rejected before sending), so this never saturates in practice.
            len: u32::try_from(self.payload.len()).unwrap_or(u32::MAX),
        }
    }

    /// Header and payload as one buffer, ready for a single `write_all`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.payload.len());
        out.extend_from_slice(bytemuck::bytes_of(&self.header()));
        out.extend_from_slice(&self.payload);
        out
    }

    /// The NUL-terminated strings of the payload, in order. Bytes after the last
    /// NUL (an unterminated tail) are not a string and are not returned.
    pub fn strings(&self) -> Vec<&[u8]> {
        split_strings(&self.payload)
    }
}

/// The NUL-terminated strings of `payload`; an unterminated tail is ignored
/// (xenstored's `get_strings`).
pub fn split_strings(payload: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = payload;
    while let Some(pos) = rest.iter().position(|&b| b == 0) {
        out.push(&rest[..pos]);
        rest = &rest[pos + 1..];
    }
    out
}

/// Build a payload of NUL-terminated strings.
pub fn join_strings<S: AsRef<[u8]>>(parts: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(p.as_ref());
        out.push(0);
    }
    out
}

/// What reading one message from a stream gave.
#[derive(Debug)]
pub enum ReadOutcome {
    /// A whole message.
    Message(Message),
    /// The peer closed the stream between messages.
    Eof,
    /// The peer closed the stream in the middle of a message.
    Truncated,
    /// The header announced a payload above `XENSTORE_PAYLOAD_MAX`: a protocol
    /// violation after which the stream cannot be resynchronised.
    TooLong(u32),
}

/// Read one message. Never allocates more than `XENSTORE_PAYLOAD_MAX` bytes,
/// whatever the peer announces.
pub fn read_message(r: &mut impl Read) -> io::Result<ReadOutcome> {
    let mut hdr = [0u8; 16];
    match read_full(r, &mut hdr)? {
        0 => return Ok(ReadOutcome::Eof),
        16 => {}
        _ => return Ok(ReadOutcome::Truncated),
    }
    let h: XsdSockmsg = bytemuck::pod_read_unaligned(&hdr);
    if h.len as usize > XENSTORE_PAYLOAD_MAX {
        return Ok(ReadOutcome::TooLong(h.len));
    }
    let mut payload = vec![0u8; h.len as usize];
    if read_full(r, &mut payload)? != payload.len() {
        return Ok(ReadOutcome::Truncated);
    }
    Ok(ReadOutcome::Message(Message {
        type_: h.type_,
        req_id: h.req_id,
        tx_id: h.tx_id,
        payload,
    }))
}

/// Fill `buf` unless the stream ends first; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The protocol name of a request type, for logs and errors ("READ", "WRITE"...).
pub fn type_name(type_: u32) -> &'static str {
    use XsdSockmsgType::*;
    match XsdSockmsgType::try_from(type_) {
        Ok(Control) => "CONTROL",
        Ok(Directory) => "DIRECTORY",
        Ok(Read) => "READ",
        Ok(GetPerms) => "GET_PERMS",
        Ok(Watch) => "WATCH",
        Ok(Unwatch) => "UNWATCH",
        Ok(TransactionStart) => "TRANSACTION_START",
        Ok(TransactionEnd) => "TRANSACTION_END",
        Ok(Introduce) => "INTRODUCE",
        Ok(Release) => "RELEASE",
        Ok(GetDomainPath) => "GET_DOMAIN_PATH",
        Ok(Write) => "WRITE",
        Ok(Mkdir) => "MKDIR",
        Ok(Rm) => "RM",
        Ok(SetPerms) => "SET_PERMS",
        Ok(WatchEvent) => "WATCH_EVENT",
        Ok(Error) => "ERROR",
        Ok(IsDomainIntroduced) => "IS_DOMAIN_INTRODUCED",
        Ok(Resume) => "RESUME",
        Ok(SetTarget) => "SET_TARGET",
        Ok(ResetWatches) => "RESET_WATCHES",
        Ok(DirectoryPart) => "DIRECTORY_PART",
        Err(_) => "UNKNOWN",
    }
}

/// An error the store answers with: one of `xsd_errors[]`, sent by name.
/// xenio's daemon sends the ones it needs; a client accepts every one C
/// xenstored and oxenstored may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum XsError {
    /// Invalid argument (bad path, malformed payload).
    EINVAL,
    /// Permission denied.
    EACCES,
    /// Already exists (a duplicate watch).
    EEXIST,
    /// Is a directory.
    EISDIR,
    /// No such node, transaction or domain.
    ENOENT,
    /// Out of memory (a failed transaction).
    ENOMEM,
    /// A quota was hit (nodes, transactions, node size, permissions).
    ENOSPC,
    /// Internal error.
    EIO,
    /// Directory not empty.
    ENOTEMPTY,
    /// Unknown request type.
    ENOSYS,
    /// Read-only store.
    EROFS,
    /// Nested transaction.
    EBUSY,
    /// A transaction conflicted: run it again.
    EAGAIN,
    /// Already connected (a domain introduced twice).
    EISCONN,
    /// Too big (watch quota, a reply above the payload limit).
    E2BIG,
    /// Not allowed (an unprivileged domain changing a node's owner).
    EPERM,
}

impl XsError {
    /// Every error of `xsd_errors[]`, in its order.
    pub const ALL: [XsError; 16] = [
        XsError::EINVAL,
        XsError::EACCES,
        XsError::EEXIST,
        XsError::EISDIR,
        XsError::ENOENT,
        XsError::ENOMEM,
        XsError::ENOSPC,
        XsError::EIO,
        XsError::ENOTEMPTY,
        XsError::ENOSYS,
        XsError::EROFS,
        XsError::EBUSY,
        XsError::EAGAIN,
        XsError::EISCONN,
        XsError::E2BIG,
        XsError::EPERM,
    ];

    /// The name sent on the wire.
    pub fn name(self) -> &'static str {
        match self {
            XsError::EINVAL => "EINVAL",
            XsError::EACCES => "EACCES",
            XsError::EEXIST => "EEXIST",
            XsError::EISDIR => "EISDIR",
            XsError::ENOENT => "ENOENT",
            XsError::ENOMEM => "ENOMEM",
            XsError::ENOSPC => "ENOSPC",
            XsError::EIO => "EIO",
            XsError::ENOTEMPTY => "ENOTEMPTY",
            XsError::ENOSYS => "ENOSYS",
            XsError::EROFS => "EROFS",
            XsError::EBUSY => "EBUSY",
            XsError::EAGAIN => "EAGAIN",
            XsError::EISCONN => "EISCONN",
            XsError::E2BIG => "E2BIG",
            XsError::EPERM => "EPERM",
        }
    }

    /// The error a name on the wire stands for; `None` for a name `xsd_errors[]`
    /// does not have.
    pub fn from_name(name: &str) -> Option<XsError> {
        XsError::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The errno value (`xsd_errors[]` pairs names with errno values).
    pub fn errno(self) -> i32 {
        XSD_ERRORS
            .iter()
            .find(|(_, n)| *n == self.name())
            .map_or(libc::EINVAL, |(e, _)| *e)
    }
}

impl std::fmt::Display for XsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_one_of_xsd_errors_and_back() {
        assert_eq!(XsError::ALL.len(), XSD_ERRORS.len());
        for (e, (errno, name)) in XsError::ALL.into_iter().zip(XSD_ERRORS) {
            assert_eq!(e.name(), name);
            assert_eq!(e.errno(), errno);
            assert_eq!(XsError::from_name(name), Some(e));
        }
        assert_eq!(XsError::from_name("EWHATEVER"), None);
        assert_eq!(XsError::EAGAIN.errno(), libc::EAGAIN);
    }

    #[test]
    fn strings_ignore_an_unterminated_tail() {
        assert_eq!(split_strings(b"a\0bc\0d"), vec![&b"a"[..], &b"bc"[..]]);
        assert_eq!(split_strings(b"\0"), vec![&b""[..]]);
        assert!(split_strings(b"abc").is_empty());
        assert_eq!(join_strings(&["x", "yz"]), b"x\0yz\0");
    }

    #[test]
    fn read_message_bounds_what_the_peer_announces() {
        let m = Message::new(XsdSockmsgType::Read, 7, 3, b"/a\0".to_vec());
        let bytes = m.encode();
        match read_message(&mut &bytes[..]).unwrap() {
            ReadOutcome::Message(got) => assert_eq!(got, m),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_message(&mut &bytes[..10]).unwrap(),
            ReadOutcome::Truncated
        ));
        assert!(matches!(
            read_message(&mut &bytes[..18]).unwrap(),
            ReadOutcome::Truncated
        ));
        assert!(matches!(
            read_message(&mut &[][..]).unwrap(),
            ReadOutcome::Eof
        ));
        let mut big = m.clone();
        big.payload = vec![1; 4097];
        assert!(matches!(
            read_message(&mut &big.encode()[..]).unwrap(),
            ReadOutcome::TooLong(4097)
        ));
    }
}
