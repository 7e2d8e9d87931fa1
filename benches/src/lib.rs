//! Criterion benchmarks for salt live in `benches/`; this library is empty on purpose.
