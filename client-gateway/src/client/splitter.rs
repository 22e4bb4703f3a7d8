//! Cutting the caller's byte stream into blocks, and each block into chunks of at most
//! `CHUNK_SIZE` bytes, on block boundaries. Runs in the task that receives the bytes,
//! so it only slices and coalesces: hashing happens in the block tasks.

use bytes::{Bytes, BytesMut};

/// A piece of the source, as the splitter hands it to block tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// At most `CHUNK_SIZE` bytes of the current block.
    Chunk(Bytes),
    /// The current block is complete.
    EndOfBlock,
}

/// Cuts a byte stream into blocks of `block_size`, each sent as chunks of at most
/// `chunk_size` bytes. Incoming buffers that already fill a chunk are split without
/// copying; small buffers (multipart parsers yield a few KiB at a time) are coalesced.
#[derive(Debug)]
pub(crate) struct Splitter {
    block_size: u64,
    chunk_size: usize,
    /// Bytes already emitted in the current block.
    in_block: u64,
    buf: BytesMut,
}

impl Splitter {
    pub(crate) fn new(block_size: u64, chunk_size: usize) -> Self {
        assert!(
            block_size > 0 && chunk_size > 0,
            "sizes are checked by the caller"
        );
        Self {
            block_size,
            chunk_size,
            in_block: 0,
            buf: BytesMut::new(),
        }
    }

    /// Size the next chunk must reach before it is emitted.
    fn target(&self) -> usize {
        let left = self.block_size - self.in_block;
        (self.chunk_size as u64).min(left) as usize
    }

    fn emit(&mut self, chunk: Bytes, out: &mut Vec<Piece>) {
        self.in_block += chunk.len() as u64;
        out.push(Piece::Chunk(chunk));
        if self.in_block == self.block_size {
            self.in_block = 0;
            out.push(Piece::EndOfBlock);
        }
    }

    pub(crate) fn push(&mut self, mut data: Bytes, out: &mut Vec<Piece>) {
        while !data.is_empty() {
            let target = self.target();
            if self.buf.is_empty() && data.len() >= target {
                let chunk = data.split_to(target);
                self.emit(chunk, out);
            } else {
                let take = (target - self.buf.len()).min(data.len());
                if self.buf.capacity() == 0 {
                    self.buf.reserve(target);
                }
                self.buf.extend_from_slice(&data.split_to(take));
                if self.buf.len() == target {
                    let chunk = self.buf.split().freeze();
                    self.emit(chunk, out);
                }
            }
        }
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<Piece>) {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.emit(chunk, out);
        }
        if self.in_block > 0 {
            self.in_block = 0;
            out.push(Piece::EndOfBlock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `inputs` (sizes of incoming buffers) through a splitter and returns the
    /// blocks as lists of chunk sizes.
    fn split(block: u64, chunk: usize, inputs: &[usize]) -> Vec<Vec<usize>> {
        let mut s = Splitter::new(block, chunk);
        let mut out = Vec::new();
        let mut n = 0u8;
        for &len in inputs {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    n = n.wrapping_add(1);
                    n
                })
                .collect();
            s.push(Bytes::from(data), &mut out);
        }
        s.finish(&mut out);
        let mut blocks = vec![];
        let mut cur = vec![];
        let mut all = Vec::new();
        for p in out {
            match p {
                Piece::Chunk(c) => {
                    assert!(!c.is_empty(), "no empty chunks");
                    all.extend_from_slice(&c);
                    cur.push(c.len());
                }
                Piece::EndOfBlock => blocks.push(std::mem::take(&mut cur)),
            }
        }
        assert!(cur.is_empty(), "every chunk belongs to a closed block");
        // Order and content are preserved.
        let total: usize = inputs.iter().sum();
        let mut n = 0u8;
        let want: Vec<u8> = (0..total)
            .map(|_| {
                n = n.wrapping_add(1);
                n
            })
            .collect();
        assert_eq!(all, want);
        blocks
    }

    /// (block size, chunk size, incoming buffers, expected blocks of chunk sizes)
    type Case = (u64, usize, &'static [usize], &'static [&'static [usize]]);

    #[test]
    fn splitting_into_blocks_and_chunks() {
        let cases: &[Case] = &[
            (10, 4, &[], &[]),
            (10, 4, &[0], &[]),
            (10, 4, &[1], &[&[1]]),
            (10, 4, &[10], &[&[4, 4, 2]]),
            (10, 4, &[9], &[&[4, 4, 1]]),
            (10, 4, &[11], &[&[4, 4, 2], &[1]]),
            (10, 4, &[25], &[&[4, 4, 2], &[4, 4, 2], &[4, 1]]),
            // Small buffers are coalesced up to the chunk size.
            (10, 4, &[1, 1, 1, 1, 1], &[&[4, 1]]),
            (10, 4, &[3, 3, 3, 3], &[&[4, 4, 2], &[2]]),
            // A chunk never straddles a block boundary.
            (6, 4, &[5, 5], &[&[4, 2], &[4]]),
            (8, 8, &[3, 3, 3, 3, 3, 3], &[&[8], &[8], &[2]]),
            (4, 8, &[20], &[&[4], &[4], &[4], &[4], &[4]]),
        ];
        for &(block, chunk, inputs, want) in cases {
            let got = split(block, chunk, inputs);
            let want: Vec<Vec<usize>> = want.iter().map(|b| b.to_vec()).collect();
            assert_eq!(got, want, "block {block}, chunk {chunk}, inputs {inputs:?}");
        }
    }

    #[test]
    fn large_buffers_are_split_without_copying() {
        let data = Bytes::from(vec![7u8; 10]);
        let ptr = data.as_ptr();
        let mut s = Splitter::new(100, 4);
        let mut out = Vec::new();
        s.push(data, &mut out);
        match &out[0] {
            Piece::Chunk(c) => assert_eq!(c.as_ptr(), ptr, "first chunk shares the buffer"),
            p => panic!("unexpected {p:?}"),
        }
    }
}
