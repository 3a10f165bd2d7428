//! Wire-format pieces shared by the injector (client side) and the sink
//! (server side), kept apart from both so each parser is tested once.

pub mod base64;
pub mod dot;
pub mod ehlo;
pub mod reply;
