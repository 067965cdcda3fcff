//! One active check against one address: connect, an optional PROXY header, then the check's
//! steps or its HTTP request, all within one timeout.
