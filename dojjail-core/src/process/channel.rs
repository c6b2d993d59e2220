//! A typed channel between the controlling process and a host's init: one serde_json
//! message per SOCK_SEQPACKET datagram, with file descriptors riding along as SCM_RIGHTS.

use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
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
/// The most descriptors one message carries, the memfd of a spilled one included.
const MAX_FDS: usize = 9;

/// One end of a message channel.
#[derive(Debug)]
pub(crate) struct Channel {
    fd: OwnedFd,
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
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub(crate) fn from_fd(fd: OwnedFd) -> Self {
        Channel { fd }
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
        Channel { fd }
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
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )?;
        let mut file = std::fs::File::from(memfd);
        file.write_all(&bytes)?;
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
        let Some((len, mut fds)) = received else {
            return Ok(None);
        };
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        let message = if &buf[..len] == SPILLED {
            let file = std::fs::File::from(fds.pop().ok_or_else(|| invalid("no memfd".into()))?);
            let size = file.metadata()?.len();
            if size > SPILL_MAX {
                return Err(invalid(format!("a message of {size} bytes")));
            }
            let mut bytes = vec![0u8; size as usize];
            file.read_exact_at(&mut bytes, 0)?;
            serde_json::from_slice(&bytes)
        } else {
            serde_json::from_slice(&buf[..len])
        };
        let message = message.map_err(|e| invalid(e.to_string()))?;
        Ok(Some((message, fds)))
    }

    fn recv_bytes(
        &self,
        buf: &mut [u8],
        flags: MsgFlags,
    ) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
        let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
        loop {
            let mut iov = [IoSliceMut::new(buf)];
            let received = match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_space),
                MsgFlags::MSG_CMSG_CLOEXEC | flags,
            ) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(received) => received,
            };
            let mut fds = Vec::new();
            for cmsg in received.cmsgs()? {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    // SAFETY: the kernel just installed these descriptors for us.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            if received.flags.contains(MsgFlags::MSG_TRUNC) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "message truncated",
                ));
            }
            if received.bytes == 0 && fds.is_empty() {
                return Ok(None);
            }
            return Ok(Some((received.bytes, fds)));
        }
    }
}
