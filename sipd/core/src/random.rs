//! Random bytes for the values a call draws many of (tags, branches, Call-IDs, digest nonces):
//! read from the kernel's CSPRNG a page at a time instead of one getrandom(2) per value. A call
//! draws about ten, and each syscall (with the seccomp and scheduler work around it) cost more
//! than the value's use. The bytes are the kernel's, unchanged; each is handed out once.

use std::cell::RefCell;

/// Bytes read from the kernel at a time.
const POOL: usize = 4096;

struct Pool {
    buf: Box<[u8; POOL]>,
    /// Bytes of `buf` already handed out (or never filled: starts at `POOL`).
    used: usize,
}

thread_local! {
    static RANDOM: RefCell<Pool> = RefCell::new(Pool { buf: Box::new([0; POOL]), used: POOL });
}

/// Fills `out` with bytes from the kernel's CSPRNG; fails only when the kernel has none to give.
pub fn fill(out: &mut [u8]) -> Result<(), getrandom::Error> {
    if out.len() > POOL / 4 {
        // Large draws gain nothing from the pool.
        return getrandom::fill(out);
    }
    RANDOM.with(|p| {
        let mut p = p.borrow_mut();
        if POOL - p.used < out.len() {
            getrandom::fill(&mut p.buf[..])?;
            p.used = 0;
        }
        let start = p.used;
        let taken = &mut p.buf[start..start + out.len()];
        out.copy_from_slice(taken);
        // Handed out once: never again from this copy.
        taken.fill(0);
        p.used += out.len();
        Ok(())
    })
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ_and_span_refills() {
        let mut seen = std::collections::HashSet::new();
        // More than a pool's worth, so the refill path runs too.
        for _ in 0..(POOL / 12) * 3 {
            let mut b = [0u8; 12];
            fill(&mut b).unwrap();
            assert!(seen.insert(b), "a 96-bit draw repeated");
        }
        let mut big = [0u8; POOL];
        fill(&mut big).unwrap();
        assert!(big.iter().any(|&b| b != 0));
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }
}
