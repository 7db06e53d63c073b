//! The codec of every Agora service: plain prost encoding (the same bytes on the wire), with
//! smaller per-stream buffers than tonic's default.
//!
//! tonic allocates an encode and a decode buffer of `buffer_size` bytes for every RPC up front
//! (8 KiB each by default) and keeps them for the stream's life. A master holds one
//! `AgentService.Connect` stream per agent, whose messages are mostly heartbeats and status
//! updates of a few hundred bytes, so at 10,000 agents those idle buffers alone cost more
//! than 150 MiB. The buffers grow as a message needs (the decoder reserves a message's length
//! at once, the encoder grows amortized), so large messages cost a few reallocations at most.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial encode and decode buffer of each RPC.
const BUFFER_BYTES: usize = 1024;
/// tonic's default: ready messages are batched into one write up to this many bytes.
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

/// `tonic_prost::ProstCodec` with [`BUFFER_BYTES`] buffers; named by `build.rs` as the codec
/// of the generated clients and servers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SmallBufferCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self {
            _messages: PhantomData,
        }
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(buffer_settings())
    }
}
