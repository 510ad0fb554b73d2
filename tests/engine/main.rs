//! Integration tests of `up`/`down` and friends against the real Docker engine.
