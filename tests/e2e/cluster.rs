//! The multi-server chat path: gate, connectors and chat servers as real processes.
