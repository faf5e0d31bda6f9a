//! weir's own HTTP/1.1 codec: sans-IO parsing of request heads, body
//! decoding and encoding of response (and request) heads and chunks.
//!
//! (Skeleton: the rules and their tests follow.)

mod body;
mod encode;
mod head;

pub use body::{BodyDecoder, Chunk, ChunkedDecoder, FramingError};
pub use encode::{
    encode_chunk_header, encode_last_chunk, encode_request_head, encode_response_head, http_date,
    keep_alive_after, response_framing, ResponseFraming, CHUNK_END, CONTINUE,
};
pub use head::{parse_request, BodyFraming, HeadError, HeaderCase, Limits, RequestHead};
