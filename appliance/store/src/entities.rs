//! The stored entities and the operations that must be atomic on them.

use crate::{Result, Sensitive, Store};
use serde::{Deserialize, Serialize};
use watchgrid_core::PublicKey;

/// A device on the VPN (agent or plain WireGuard device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub id: String,
    pub name: String,
    /// Stored as wg(8)'s base64 string.
    pub public_key: PublicKey,
    pub address_v4: std::net::Ipv4Addr,
    /// In the VPN's IPv6 /64: the same host number as the IPv4 address, so the pair
    /// is collision-free whenever the IPv4 address is.
    #[serde(default)]
    pub address_v6: Option<std::net::Ipv6Addr>,
    pub enabled: bool,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    /// Hex SHA-256 of the agent credential handed out at registration.
    pub agent_key_hash: String,
    /// Where the device was last seen (`ip:port`), saved at shutdown so a restarted hub
    /// can reach it first.
    #[serde(default)]
    pub last_endpoint: Option<String>,
    /// Groups (tags) the firewall's forward rules refer to.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The agent was enrolled with `--allow-commands`: the operator may queue remote
    /// commands for it. Left out of the record when false, so a build from before
    /// commands (which refuses unknown fields) still reads every other device.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_commands: bool,
}

impl Device {
    /// True once the expiry time (if any) has passed.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }

    /// Enabled and not expired: the device is a hub peer and a firewall member.
    pub fn is_active(&self, now: u64) -> bool {
        self.enabled && !self.is_expired(now)
    }
}

/// An enrollment token. Only a hash of the token is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentToken {
    /// Hex SHA-256 of the token; also the record key.
    pub token_hash: String,
    pub name: String,
    /// Redemptions left; the token is deleted when it reaches zero.
    pub uses_left: u32,
    pub expires_at: Option<u64>,
    pub created_at: u64,
    /// Groups every device enrolled with this token joins.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The VPN's IPv6 unique local /64 (RFC 4193), generated on first start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub ula_prefix: std::net::Ipv6Addr,
}

/// Appliance settings, written by setup and the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `host:port` that devices dial (WG_SERVER_ENDPOINT).
    pub endpoint: String,
    pub vpn_subnet_v4: std::net::Ipv4Addr,
    pub vpn_prefix_v4: u8,
    /// Hex HMAC key for session JWTs (JWT_SECRET).
    pub jwt_secret: Sensitive<String>,
    pub setup_completed_at: u64,
    /// The TLS mode chosen in the wizard.
    #[serde(default)]
    pub tls: TlsChoice,
}

/// Where the HTTPS certificate comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum TlsChoice {
    /// The appliance's own CA (the default).
    #[default]
    Internal,
    /// ACME (TLS-ALPN-01) for a public domain.
    Acme {
        domain: String,
        email: Option<String>,
    },
    /// A certificate the operator uploaded; kept as files in the data dir.
    Uploaded,
}

/// An administrator. The password is stored as an argon2id PHC string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    pub username: String,
    pub password_hash: Sensitive<String>,
    /// Sessions issued before this time are void (set on password change).
    pub sessions_valid_after: u64,
    pub created_at: u64,
    /// Base32 TOTP secret once 2FA is enabled.
    #[serde(default)]
    pub totp_secret: Option<Sensitive<String>>,
    /// A secret shown for enrolment, not yet confirmed with a code.
    #[serde(default)]
    pub totp_pending: Option<Sensitive<String>>,
    /// The last TOTP time step accepted: a code is usable once (SPEC §6).
    #[serde(default)]
    pub totp_last_step: u64,
    /// Hex SHA-256 of unused recovery codes.
    #[serde(default)]
    pub recovery_code_hashes: Vec<String>,
    /// Sessions and API tokens carry the epoch they were issued in; a password change
    /// or reset moves it on, which voids every one of them in the same write.
    #[serde(default)]
    pub credential_epoch: u64,
}

/// An API token for automation. Only a hash of the token is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Hex SHA-256 of the token; also the record key.
    pub token_hash: String,
    pub name: String,
    pub username: String,
    pub created_at: u64,
    /// Unix time after which the token is refused; `None` never expires.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// When the token last authenticated a request (updated at most once a minute).
    #[serde(default)]
    pub last_used_at: Option<u64>,
    /// The owner's [`AdminUser::credential_epoch`] when the token was made.
    #[serde(default)]
    pub epoch: u64,
}

impl ApiToken {
    /// The token's public name in lists and URLs: the first 16 hex digits of its hash.
    /// The hash of a 256-bit random token gives nothing away about the token.
    pub fn id(&self) -> &str {
        self.token_hash.get(..16).unwrap_or(&self.token_hash)
    }
}

/// A revoked session (logout), kept until the session would have expired anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedSession {
    pub jti: String,
    pub expires_at: u64,
}

/// One audit log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    pub at: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
}

/// Outcome of redeeming an enrollment token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// Redeemed; the token as it was before this use.
    Accepted(EnrollmentToken),
    /// Unknown, used up or expired: callers answer all three with the same generic 401.
    Rejected,
}

impl Store {
    /// The VPN's IPv6 prefix, if one was generated.
    pub fn network(&self) -> Result<Option<Network>> {
        self.network.get(crate::NETWORK_KEY)
    }

    /// The VPN's IPv6 prefix, generating a random ULA /64 (fdXX:XXXX:XXXX:XXXX::/64)
    /// the first time. `random` supplies the 56 random bits (tests pass their own).
    pub fn network_or_init(&self, random: [u8; 7]) -> Result<Network> {
        if let Some(n) = self.network()? {
            return Ok(n);
        }
        let mut b = [0u8; 16];
        b[0] = 0xfd;
        b[1..8].copy_from_slice(&random);
        let candidate = Network {
            ula_prefix: std::net::Ipv6Addr::from(b),
        };
        // First writer wins; a concurrent initialiser reads the winner.
        self.network.put_new(crate::NETWORK_KEY, &candidate)?;
        Ok(self.network()?.unwrap_or(candidate))
    }

    /// Uses one redemption of the token with this hash, atomically: of any number of
    /// concurrent callers, exactly `uses_left` succeed.
    pub fn redeem_enrollment_token(&self, token_hash: &str, now: u64) -> Result<Redemption> {
        let mut before = None;
        let outcome = self.enrollment_tokens.update(token_hash, |current| {
            let Some(t) = current else { return Err(()) };
            if t.uses_left == 0 || t.expires_at.is_some_and(|e| now >= e) {
                return Err(());
            }
            before = Some(t.clone());
            let left = t.uses_left - 1;
            Ok((left > 0).then_some(EnrollmentToken {
                uses_left: left,
                ..t
            }))
        })?;
        Ok(match (outcome, before) {
            (Ok(_), Some(t)) => Redemption::Accepted(t),
            _ => Redemption::Rejected,
        })
    }

    /// Gives back one use of a redeemed token whose registration then failed, so a
    /// hub error does not burn a single-use token. `redeemed` is the token as
    /// [`Redemption::Accepted`] returned it; a token that was used up (and so deleted)
    /// comes back with one use.
    pub fn return_enrollment_use(&self, redeemed: &EnrollmentToken) -> Result<()> {
        let outcome = self
            .enrollment_tokens
            .update(&redeemed.token_hash, |current| {
                Ok::<_, ()>(Some(match current {
                    Some(t) => EnrollmentToken {
                        uses_left: t.uses_left.saturating_add(1),
                        ..t
                    },
                    None => EnrollmentToken {
                        uses_left: 1,
                        ..redeemed.clone()
                    },
                }))
            })?;
        debug_assert!(outcome.is_ok());
        Ok(())
    }

    /// Stores a new device on the lowest free host address of `subnet_base/prefix`
    /// (the first host is the hub), atomically claiming the address so concurrent
    /// registrations never share one. Returns the device as stored.
    pub fn create_device(
        &self,
        mut device: Device,
        subnet_base: std::net::Ipv4Addr,
        prefix: u8,
    ) -> Result<Device> {
        let _change = self.durability.gate.change();
        let base =
            u32::from(subnet_base) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let hosts = 1u64 << (32 - u32::from(prefix.min(32)));
        let claims = self.db.open_tree("address_claims")?;
        let keys = self.db.open_tree(crate::PUBLIC_KEYS_TREE)?;
        let key = device.public_key.0;
        if keys
            .compare_and_swap(key, None::<&[u8]>, Some(device.id.as_bytes()))?
            .is_err()
        {
            return Err(crate::StoreError::Conflict(
                "a device with this public key exists".into(),
            ));
        }
        let error = match self.claim_address(&mut device, &claims, base, hosts) {
            Ok(true) => return Ok(device),
            Ok(false) => crate::StoreError::Conflict(format!(
                "no free address left in {subnet_base}/{prefix}"
            )),
            Err(e) => e,
        };
        keys.remove(key)?;
        self.commit()?;
        Err(error)
    }

    /// Claims the first free address for the device and stores it, with its agent key
    /// in the index; the caller has claimed its public key. False: the subnet is full.
    fn claim_address(
        &self,
        device: &mut Device,
        claims: &sled::Tree,
        base: u32,
        hosts: u64,
    ) -> Result<bool> {
        // .0 is the network, .1 the hub, the last one broadcast.
        let last = hosts.saturating_sub(1);
        while let Some(offset) = first_unclaimed(claims, base, 2, last)? {
            let addr = std::net::Ipv4Addr::from(base.wrapping_add(offset as u32));
            let claimed = claims
                .compare_and_swap(addr.octets(), None::<&[u8]>, Some(device.id.as_bytes()))?
                .is_ok();
            // Lost to a concurrent registration: look again.
            if claimed {
                if !device.agent_key_hash.is_empty() {
                    self.db
                        .open_tree(crate::AGENT_KEYS_TREE)?
                        .insert(device.agent_key_hash.as_bytes(), device.id.as_bytes())?;
                }
                device.address_v4 = addr;
                device.address_v6 = self.network()?.map(|n| {
                    std::net::Ipv6Addr::from(u128::from(n.ula_prefix) | u128::from(offset))
                });
                // put_new commits the claim along with the device (one log, one sync).
                if !self.devices.put_new(&device.id, device)? {
                    claims.remove(addr.octets())?;
                    self.db
                        .open_tree(crate::AGENT_KEYS_TREE)?
                        .remove(device.agent_key_hash.as_bytes())?;
                    self.commit()?;
                    return Err(crate::StoreError::Conflict(format!(
                        "device id {} already exists",
                        device.id
                    )));
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Deletes a device and releases its address.
    pub fn delete_device(&self, id: &str) -> Result<Option<Device>> {
        let _change = self.durability.gate.change();
        let removed = self.devices.remove(id)?;
        if let Some(d) = &removed {
            let claims = self.db.open_tree("address_claims")?;
            claims.remove(d.address_v4.octets())?;
            self.db
                .open_tree(crate::PUBLIC_KEYS_TREE)?
                .remove(d.public_key.0)?;
            if !d.agent_key_hash.is_empty() {
                self.db
                    .open_tree(crate::AGENT_KEYS_TREE)?
                    .remove(d.agent_key_hash.as_bytes())?;
            }
            self.commit()?;
            self.delete_traffic(id)?;
            self.quotas.remove(id)?;
        }
        Ok(removed)
    }

    /// The device whose agent key has this hash (hex SHA-256), if any.
    pub fn device_by_agent_key(&self, key_hash: &str) -> Result<Option<Device>> {
        let index = self.db.open_tree(crate::AGENT_KEYS_TREE)?;
        let Some(id) = index.get(key_hash.as_bytes())? else {
            return Ok(None);
        };
        let device = self.devices.get(&String::from_utf8_lossy(&id))?;
        // The index and the device are written together; check anyway, so a stale entry
        // can never authenticate as whichever device reuses the id.
        Ok(device.filter(|d| d.agent_key_hash == key_hash))
    }

    /// Appends to the audit log (committed).
    pub fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let _change = self.durability.gate.change();
        // Zero-padded ids keep the log in insertion order under sled's byte ordering.
        let key = format!("{:020}", self.next_id()?);
        self.audit.put(&key, entry)
    }
}

/// The firewall policy the operator edits (one record, key [`crate::FIREWALL_KEY`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallPolicy {
    /// Networks the setup wizard, admin pages and admin API answer; `None` is the
    /// default fence (loopback, the VPN, private LAN ranges).
    #[serde(default)]
    pub admin_cidrs: Option<Vec<String>>,
    /// Peers may reach networks behind the hub, masqueraded as the hub.
    #[serde(default)]
    pub egress: bool,
    /// Forward rules between groups; without any, peers reach the hub only. Stored in
    /// their written form (see [`watchgrid_firewall::RuleSpec`]), checked when read.
    #[serde(default)]
    pub rules: Vec<watchgrid_firewall::Rule>,
}

/// The lowest host offset in `from..to` with no address claim. Claims are keyed by the
/// address's octets, so they iterate in address order: one ordered walk finds the first
/// gap, rather than one claim attempt per address already taken.
fn first_unclaimed(claims: &sled::Tree, base: u32, from: u64, to: u64) -> Result<Option<u64>> {
    if from >= to {
        return Ok(None);
    }
    let octets = |offset: u64| base.wrapping_add(offset as u32).to_be_bytes();
    let mut expected = from;
    for kv in claims.range(octets(from)..octets(to)) {
        let (key, _) = kv?;
        let Ok(raw) = <[u8; 4]>::try_from(key.as_ref()) else {
            continue;
        };
        let offset = u64::from(u32::from_be_bytes(raw).wrapping_sub(base));
        if offset != expected {
            break;
        }
        expected += 1;
    }
    Ok((expected < to).then_some(expected))
}
