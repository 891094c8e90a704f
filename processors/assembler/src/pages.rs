//! Fixed-size pages for the bytes of open traces. Traces grow by whole pages taken from a free
//! list and give them back when emitted, so the churn of traces opening and closing reuses the
//! same memory instead of fragmenting the heap, and what the process holds stays near the pages
//! in use.

/// Small enough that a short trace wastes little of its last page, large enough that the page
/// index (4 bytes a page) is under 1% of the data.
pub const PAGE_SIZE: usize = 1024;

#[derive(Default)]
pub struct PagePool {
    pages: Vec<Box<[u8; PAGE_SIZE]>>,
    free: Vec<u32>,
}

impl PagePool {
    fn take(&mut self) -> u32 {
        match self.free.pop() {
            Some(page) => page,
            None => {
                self.pages.push(Box::new([0; PAGE_SIZE]));
                (self.pages.len() - 1) as u32
            }
        }
    }

    /// Pages ever allocated (in use or free for reuse).
    #[cfg(test)]
    pub fn allocated(&self) -> usize {
        self.pages.len()
    }
}

/// The bytes of one trace, in pages of a [`PagePool`].
#[derive(Default)]
pub struct PagedBytes {
    pages: Vec<u32>,
    len: usize,
}

impl PagedBytes {
    pub fn append(&mut self, pool: &mut PagePool, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let offset = self.len % PAGE_SIZE;
            if offset == 0 {
                self.pages.push(pool.take());
            }
            let page = *self.pages.last().expect("a page was just taken");
            let n = (PAGE_SIZE - offset).min(bytes.len());
            pool.pages[page as usize][offset..offset + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
    }

    pub fn copy_to(&self, pool: &PagePool, out: &mut Vec<u8>) {
        let mut left = self.len;
        for &page in &self.pages {
            let n = left.min(PAGE_SIZE);
            out.extend_from_slice(&pool.pages[page as usize][..n]);
            left -= n;
        }
    }

    /// Gives the pages back to the pool.
    pub fn release(&mut self, pool: &mut PagePool) {
        pool.free.append(&mut self.pages);
        self.len = 0;
    }

    /// Bytes stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes held: whole pages plus the page index.
    pub fn cost(&self) -> usize {
        self.pages.len() * PAGE_SIZE + self.pages.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_across_pages_and_reuses_them() {
        let mut pool = PagePool::default();
        let mut a = PagedBytes::default();
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        a.append(&mut pool, &data[..10]);
        a.append(&mut pool, &data[10..]);
        let mut out = Vec::new();
        a.copy_to(&pool, &mut out);
        assert_eq!(out, data);
        assert_eq!(pool.allocated(), 3);
        a.release(&mut pool);
        let mut b = PagedBytes::default();
        b.append(&mut pool, &data[..2048]);
        assert_eq!(pool.allocated(), 3, "released pages are reused");
    }
}
