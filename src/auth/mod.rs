pub mod bearer;
pub mod jwt;
pub mod login;
pub mod password;
