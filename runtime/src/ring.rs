//! stub, being written
pub struct Lagged;
pub struct Read;
pub struct Ring;
pub struct RingReader;
