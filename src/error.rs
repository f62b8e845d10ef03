//! The core's errors. The C layer maps each to a negative errno.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A bad argument: unaligned, reversed, out of bounds, or a handle that names no frame.
    Invalid,
    /// Overlaps a registered range, or a mapping still has ranges registered inside it.
    Busy,
    /// Nothing registered (or no file) by that name.
    NotFound,
    /// The calling thread holds a kmap, so waiting for readers would wait for itself.
    Deadlock,
    /// The pfn lies in no registered range.
    NotMapped,
    OutOfMemory,
    /// A signal handler interrupted this thread's own set-up: try again outside it.
    Again,
    /// No free physical space of the size asked for.
    NoSpace,
    /// An operating-system error, by its errno.
    Os(i32),
    /// A scatterlist loops back on itself.
    Loop,
    /// A scatterlist link leads nowhere (NULL, or not a pointer to entries).
    BadLink,
    /// A length or offset passes the end of the space it counts in.
    Overflow,
}

impl Error {
    /// The POSIX error number for this error.
    pub fn errno(self) -> i32 {
        match self {
            Error::Invalid => libc::EINVAL,
            Error::Busy => libc::EBUSY,
            Error::NotFound => libc::ENOENT,
            Error::Deadlock => libc::EDEADLK,
            Error::NotMapped => libc::ENXIO,
            Error::OutOfMemory => libc::ENOMEM,
            Error::Again => libc::EAGAIN,
            Error::NoSpace => libc::ENOSPC,
            Error::Os(e) => e,
            Error::Loop => libc::ELOOP,
            Error::BadLink => libc::EFAULT,
            Error::Overflow => libc::EOVERFLOW,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::ENOENT) => Error::NotFound,
            Some(n) => Error::Os(n),
            None if e.kind() == std::io::ErrorKind::OutOfMemory => Error::OutOfMemory,
            None => Error::Invalid,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.errno()))
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
