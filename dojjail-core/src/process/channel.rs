//! A typed channel between the controlling process and a host's init: one serde_json
//! message per SOCK_SEQPACKET datagram, with file descriptors riding along as SCM_RIGHTS.

use std::io::{self, IoSlice, Write};
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::spin;

/// The largest message sent in the datagram itself. A larger one (spawn requests carry
/// argv and environment, which may reach the kernel's ARG_MAX of megabytes) travels in a
/// memfd attached to a one-byte [`SPILLED`] datagram: a datagram cannot be larger than the
/// socket's send buffer.
const INLINE_MAX: usize = 64 << 10;
/// Marks a message that travels in the memfd attached last. JSON never starts with NUL.
const SPILLED: &[u8] = b"\0";
/// Refuses spilled messages beyond this size (no message of ours comes near it).
const SPILL_MAX: u64 = 256 << 20;
/// The most descriptors one message of ours carries, the memfd of a spilled one included;
/// a message with more is refused.
const MAX_FDS: usize = 9;
/// The kernel's cap on descriptors in one message (SCM_MAX_FD). With room for this many,
/// only a lack of free descriptor slots truncates what a peer attached; either way every
/// descriptor that arrives is owned here and closed when unwanted.
const SCM_MAX_FD: usize = 253;
/// The seals of a spilled message's memfd: its size and contents are fixed, so reading it
/// cannot block or change under the reader (a peer cannot pass off a pipe or a FUSE file).
const SPILL_SEALS: nix::fcntl::SealFlag = nix::fcntl::SealFlag::F_SEAL_SHRINK
    .union(nix::fcntl::SealFlag::F_SEAL_GROW)
    .union(nix::fcntl::SealFlag::F_SEAL_WRITE);

/// One end of a message channel.
#[derive(Debug)]
pub(crate) struct Channel {
    fd: OwnedFd,
    /// Whether spilled messages are read: only by an init, from its control channel, where
    /// spawn requests may carry megabytes of arguments. Everything that comes from an init
    /// is small, so a spill from one is refused unread.
    accepts_spills: bool,
}

impl Channel {
    /// A connected pair, both ends close-on-exec.
    pub(crate) fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel::from_fd(a), Channel::from_fd(b)))
    }

    pub(crate) fn from_fd(fd: OwnedFd) -> Self {
        Channel {
            fd,
            accepts_spills: false,
        }
    }

    /// This channel reads spilled messages (see [`Channel::accepts_spills`]).
    pub(crate) fn accepting_spills(self) -> Self {
        Channel {
            accepts_spills: true,
            ..self
        }
    }

    /// Adopts the channel a launched process inherited at `fd` (without close-on-exec,
    /// which is set now: its own children must not inherit it).
    ///
    /// # Safety
    /// `fd` must be an open descriptor that nothing else owns.
    pub(crate) unsafe fn adopt_inherited(fd: RawFd) -> Self {
        // SAFETY: guaranteed by the caller.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        Channel::from_fd(fd)
    }

    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    pub(crate) fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Sends one message with `fds` attached.
    pub(crate) fn send<T: Serialize>(&self, message: &T, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
        if bytes.len() <= INLINE_MAX {
            return self.send_bytes(&bytes, fds);
        }
        let memfd = nix::sys::memfd::memfd_create(
            c"dojjail-message",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
        )?;
        let mut file = std::fs::File::from(memfd);
        file.write_all(&bytes)?;
        nix::fcntl::fcntl(
            &file,
            nix::fcntl::FcntlArg::F_ADD_SEALS(SPILL_SEALS | nix::fcntl::SealFlag::F_SEAL_SEAL),
        )?;
        let mut all = fds.to_vec();
        all.push(file.as_fd());
        self.send_bytes(SPILLED, &all)
    }

    fn send_bytes(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() {
            &[]
        } else {
            &[ControlMessage::ScmRights(&raw)]
        };
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &[IoSlice::new(bytes)],
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => return Ok(()),
            }
        }
    }

    /// Receives one message and the descriptors that came with it; `None` when the other
    /// end has closed.
    pub(crate) fn recv<T: DeserializeOwned>(&self) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        self.recv_spinning(Duration::ZERO)
    }

    /// [`Channel::recv`] without waiting: `Ok(None)` when no message is there (or the
    /// other end has closed).
    pub(crate) fn try_recv<T: DeserializeOwned>(&self) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        let mut buf = vec![0u8; INLINE_MAX];
        match self.recv_bytes(&mut buf, MsgFlags::MSG_DONTWAIT) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
            Ok(None) => Ok(None),
            Ok(Some((len, fds))) => self.decode(&buf[..len], fds).map(Some),
        }
    }

    /// [`Channel::recv`] for an answer expected within `spin`: spins that long before it
    /// sleeps (see [`crate::spin`]).
    pub(crate) fn recv_spinning<T: DeserializeOwned>(
        &self,
        spin: Duration,
    ) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        let mut buf = vec![0u8; INLINE_MAX];
        let spun = if spin.is_zero() {
            None
        } else {
            spin::spin_for(spin, || {
                match self.recv_bytes(&mut buf, MsgFlags::MSG_DONTWAIT) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    other => Some(other),
                }
            })
        };
        let received = match spun {
            Some(received) => received?,
            None => self.recv_bytes(&mut buf, MsgFlags::empty())?,
        };
        let Some((len, fds)) = received else {
            return Ok(None);
        };
        self.decode(&buf[..len], fds).map(Some)
    }

    /// The message in `datagram`, or in the memfd attached last when it is spilled.
    fn decode<T: DeserializeOwned>(
        &self,
        datagram: &[u8],
        mut fds: Vec<OwnedFd>,
    ) -> io::Result<(T, Vec<OwnedFd>)> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        let message = if datagram == SPILLED {
            if !self.accepts_spills {
                return Err(invalid("a spilled message where none is expected".into()));
            }
            let file = std::fs::File::from(fds.pop().ok_or_else(|| invalid("no memfd".into()))?);
            let seals = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GET_SEALS)
                .map(nix::fcntl::SealFlag::from_bits_truncate);
            if !seals.is_ok_and(|seals| seals.contains(SPILL_SEALS)) {
                return Err(invalid("a spilled message not in a sealed memfd".into()));
            }
            let size = file.metadata()?.len();
            if size > SPILL_MAX {
                return Err(invalid(format!("a message of {size} bytes")));
            }
            let mut bytes = vec![0u8; size as usize];
            file.read_exact_at(&mut bytes, 0)?;
            serde_json::from_slice(&bytes)
        } else {
            serde_json::from_slice(datagram)
        };
        let message = message.map_err(|e| invalid(e.to_string()))?;
        Ok((message, fds))
    }

    /// One datagram into `buf`, with the descriptors attached to it. Written on libc, not
    /// nix: when the receiver has too few free descriptor slots the kernel installs some
    /// and sets MSG_CTRUNC, and nix then returns an error without the installed ones, which
    /// would leak; here every installed descriptor is owned (and closed on error).
    fn recv_bytes(
        &self,
        buf: &mut [u8],
        flags: MsgFlags,
    ) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        // u64s keep the buffer aligned for `cmsghdr`.
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE((SCM_MAX_FD * size_of::<RawFd>()) as u32) };
        let mut control = vec![0u64; (space as usize).div_ceil(8)];
        loop {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
            let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
            header.msg_iov = &mut iov;
            header.msg_iovlen = 1;
            header.msg_control = control.as_mut_ptr().cast();
            header.msg_controllen = (control.len() * 8) as _;
            let flags = (MsgFlags::MSG_CMSG_CLOEXEC | flags).bits();
            // SAFETY: `header` describes buffers we own, for the duration of the call.
            let received = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut header, flags) };
            if received < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let mut fds = Vec::new();
            // SAFETY: walking the control messages the kernel wrote into `control`, as
            // cmsg(3) describes; each SCM_RIGHTS entry is a descriptor installed for us.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(&header);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == libc::SOL_SOCKET
                        && (*cmsg).cmsg_type == libc::SCM_RIGHTS
                    {
                        let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                        let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                        for k in 0..bytes / size_of::<RawFd>() {
                            fds.push(OwnedFd::from_raw_fd(data.add(k).read_unaligned()));
                        }
                    }
                    cmsg = libc::CMSG_NXTHDR(&header, cmsg);
                }
            }
            if header.msg_flags & libc::MSG_TRUNC != 0 {
                return Err(invalid("message truncated".into()));
            }
            if header.msg_flags & libc::MSG_CTRUNC != 0 {
                return Err(invalid(
                    "descriptors of a message were dropped (too many, or no free slots)".into(),
                ));
            }
            if fds.len() > MAX_FDS {
                return Err(invalid(format!("a message with {} descriptors", fds.len())));
            }
            if received == 0 && fds.is_empty() {
                return Ok(None);
            }
            return Ok(Some((received as usize, fds)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd_with(name: &std::ffi::CStr, bytes: &[u8]) -> std::fs::File {
        let fd =
            nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes).unwrap();
        file
    }

    /// Descriptors of this process open on memfds called `name` (tests run side by side in
    /// one process, so counting all descriptors would not do).
    fn open_memfds(name: &str) -> usize {
        let target = format!("/memfd:{name} (deleted)");
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|entry| std::fs::read_link(entry.path()).is_ok_and(|link| link == *target))
            .count()
    }

    #[test]
    fn a_large_message_travels_in_a_sealed_memfd() {
        let (a, b) = Channel::pair().unwrap();
        let b = b.accepting_spills();
        let big = "x".repeat(INLINE_MAX * 3);
        a.send(&big, &[]).unwrap();
        let (received, fds) = b.recv::<String>().unwrap().unwrap();
        assert_eq!(received, big);
        assert!(fds.is_empty());
    }

    #[test]
    fn a_spill_where_none_is_expected_is_refused() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&"x".repeat(INLINE_MAX * 3), &[]).unwrap();
        let error = b.recv::<String>().unwrap_err();
        assert!(error.to_string().contains("none is expected"), "{error}");
    }

    #[test]
    fn a_message_with_too_many_descriptors_is_refused_and_they_are_closed() {
        let (a, b) = Channel::pair().unwrap();
        let files: Vec<_> = (0..MAX_FDS + 3)
            .map(|_| memfd_with(c"too-many", b"\"x\""))
            .collect();
        let fds: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
        a.send_bytes(b"\"hello\"", &fds).unwrap();
        let error = b.recv::<String>().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        assert_eq!(
            open_memfds("too-many"),
            files.len(),
            "descriptors of the refused message leaked"
        );
    }

    #[test]
    fn a_spilled_message_in_an_unsealed_file_is_refused() {
        let (a, b) = Channel::pair().unwrap();
        let b = b.accepting_spills();
        let unsealed = memfd_with(c"unsealed", b"\"sneaky\"");
        a.send_bytes(SPILLED, &[unsealed.as_fd()]).unwrap();
        let error = b.recv::<String>().unwrap_err();
        assert!(error.to_string().contains("sealed"), "{error}");
    }
}
