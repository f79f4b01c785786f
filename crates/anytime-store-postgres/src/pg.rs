//! The SQL of each store method, on a pooled PostgreSQL session.

use anytime_proto::frame::{
    ClaimedKeyPackage, ConvKind, ConversationSummary, Message, MessageKind, PresencePrivacy, Seq,
};
use anytime_proto::{ConvId, DeviceId, ErrorCode, MsgId, UserId};
use anytime_server_core::store::*;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// Step `i` upgrades from version `i` to `i + 1`.
const STEPS: &[&str] = &[include_str!("migrations/v0_to_v1.sql"), include_str!("migrations/v1_to_v2.sql")];
/// Serialises schema migrations between nodes starting at once.
const MIGRATION_LOCK: i64 = 0x616e_7974_696d_6501;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the database URL is not valid: {0}")]
    Url(String),
    #[error("could not create the connection pool: {0}")]
    Pool(String),
    #[error("could not migrate the database schema: {0}")]
    Migrate(String),
    #[error("the database has schema version {0}, newer than this build's; run a newer anytime")]
    TooNew(i32),
}

pub(crate) fn pool(url: &str, connections: usize) -> Result<Pool, OpenError> {
    let config: tokio_postgres::Config =
        url.parse().map_err(|e: tokio_postgres::Error| OpenError::Url(e.to_string()))?;
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager).max_size(connections.max(1)).build().map_err(|e| OpenError::Pool(e.to_string()))
}

fn migrate_error<E: std::fmt::Display>(error: E) -> OpenError {
    OpenError::Migrate(error.to_string())
}

pub(crate) async fn migrate(pool: &Pool) -> Result<(), OpenError> {
    let mut client = pool.get().await.map_err(|e| OpenError::Migrate(e.to_string()))?;
    let tx = client.transaction().await.map_err(migrate_error)?;
    exec(&tx, "SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(migrate_error)?;
    exec(&tx, "CREATE TABLE IF NOT EXISTS anytime_schema (version INTEGER NOT NULL)", &[])
        .await
        .map_err(migrate_error)?;
    let found: i32 = match query_opt(&tx, "SELECT version FROM anytime_schema", &[]).await.map_err(migrate_error)? {
        Some(row) => row.get(0),
        None => {
            exec(&tx, "INSERT INTO anytime_schema (version) VALUES (0)", &[]).await.map_err(migrate_error)?;
            0
        }
    };
    if found as usize > STEPS.len() {
        return Err(OpenError::TooNew(found));
    }
    for (from, sql) in STEPS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).await.map_err(migrate_error)?;
        exec(&tx, "UPDATE anytime_schema SET version = $1", &[&(from as i32 + 1)]).await.map_err(migrate_error)?;
        tracing::info!(version = from + 1, "database schema migrated");
    }
    tx.commit().await.map_err(migrate_error)
}

pub(crate) fn id(n: u64) -> i64 {
    n as i64
}

fn uid(n: i64) -> u64 {
    n as u64
}

fn backend<E: std::fmt::Display>(error: E) -> StoreError {
    StoreError::Backend(error.to_string())
}

fn rejected(code: ErrorCode) -> StoreError {
    StoreError::Rejected(code)
}

async fn client(pool: &Pool) -> StoreResult<deadpool_postgres::Object> {
    pool.get().await.map_err(backend)
}

// Every statement goes through the connection's prepared-statement cache: parsed and planned
// once per pooled connection, then only bound and executed.
async fn query<C: GenericClient>(c: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(backend)?;
    c.query(&statement, params).await.map_err(backend)
}

async fn query_opt<C: GenericClient>(c: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Option<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(backend)?;
    c.query_opt(&statement, params).await.map_err(backend)
}

async fn query_one<C: GenericClient>(c: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Row> {
    let statement = c.prepare_cached(sql).await.map_err(backend)?;
    c.query_one(&statement, params).await.map_err(backend)
}

async fn exec<C: GenericClient>(c: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
    let statement = c.prepare_cached(sql).await.map_err(backend)?;
    c.execute(&statement, params).await.map_err(backend)
}

pub(crate) async fn execute(pool: &Pool, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<()> {
    exec(&client(pool).await?, sql, params).await?;
    Ok(())
}

pub(crate) async fn exists(pool: &Pool, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<bool> {
    Ok(query_opt(&client(pool).await?, sql, params).await?.is_some())
}

pub(crate) fn privacy_to_i16(privacy: PresencePrivacy) -> i16 {
    match privacy {
        PresencePrivacy::Everyone => 0,
        PresencePrivacy::Contacts => 1,
        PresencePrivacy::Nobody => 2,
    }
}

fn privacy_from_i16(n: i16) -> PresencePrivacy {
    match n {
        0 => PresencePrivacy::Everyone,
        2 => PresencePrivacy::Nobody,
        _ => PresencePrivacy::Contacts,
    }
}

fn kind_to_i16(kind: ConvKind) -> i16 {
    match kind {
        ConvKind::Direct => 0,
        ConvKind::Group => 1,
    }
}

fn kind_from_i16(n: i16) -> ConvKind {
    if n == 0 {
        ConvKind::Direct
    } else {
        ConvKind::Group
    }
}

pub(crate) fn direct_key(a: UserId, b: UserId) -> String {
    let (low, high) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    format!("{low}:{high}")
}

// ---------------------------------------------------------------- accounts

const USER_COLUMNS: &str = "id, username, password_hash, display_name, avatar, presence_privacy, created_at_ms";

fn user_from_row(row: &Row) -> UserRecord {
    UserRecord {
        id: UserId(uid(row.get(0))),
        username: row.get(1),
        password_hash: row.get(2),
        display_name: row.get(3),
        avatar: row.get(4),
        presence_privacy: privacy_from_i16(row.get(5)),
        created_at_ms: uid(row.get(6)),
    }
}

const DEVICE_COLUMNS: &str =
    "id, user_id, name, token_hash, created_at_ms, expires_at_ms, last_seen_ms, approved, link_code";

fn device_from_row(row: &Row) -> DeviceRecord {
    let hash: Vec<u8> = row.get(3);
    let mut token_hash = [0u8; 32];
    if hash.len() == 32 {
        token_hash.copy_from_slice(&hash);
    }
    DeviceRecord {
        id: DeviceId(uid(row.get(0))),
        user: UserId(uid(row.get(1))),
        name: row.get(2),
        token_hash,
        created_at_ms: uid(row.get(4)),
        expires_at_ms: uid(row.get(5)),
        last_seen_ms: uid(row.get(6)),
        approved: row.get(7),
        link_code: row.get(8),
    }
}

pub(crate) async fn user_where(
    pool: &Pool,
    condition: &str,
    value: &(dyn ToSql + Sync),
) -> StoreResult<Option<UserRecord>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {condition}");
    Ok(query_opt(&client(pool).await?, &sql, &[value]).await?.as_ref().map(user_from_row))
}

pub(crate) async fn devices_where(
    pool: &Pool,
    condition: &str,
    value: &(dyn ToSql + Sync),
) -> StoreResult<Vec<DeviceRecord>> {
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE {condition} ORDER BY created_at_ms, id");
    Ok(query(&client(pool).await?, &sql, &[value]).await?.iter().map(device_from_row).collect())
}

async fn insert_device<C: GenericClient>(c: &C, device: &DeviceRecord) -> StoreResult<()> {
    exec(c,
        "INSERT INTO devices (id, user_id, name, token_hash, created_at_ms, expires_at_ms, last_seen_ms, approved, link_code)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[&id(device.id.0), &id(device.user.0), &device.name, &&device.token_hash[..], &id(device.created_at_ms),
          &id(device.expires_at_ms), &id(device.last_seen_ms), &device.approved, &device.link_code],
    ).await?;
    if device.approved {
        start_cursors(c, device.id, device.user).await?;
    }
    Ok(())
}

/// An approved device reads each conversation of its account from the current end.
async fn start_cursors<C: GenericClient>(c: &C, device: DeviceId, user: UserId) -> StoreResult<()> {
    exec(
        c,
        "INSERT INTO cursors (device_id, conv_id, acked_seq)
         SELECT $1, m.conv_id, c.last_seq FROM members m JOIN conversations c ON c.id = m.conv_id WHERE m.user_id = $2
         ON CONFLICT DO NOTHING",
        &[&id(device.0), &id(user.0)],
    )
    .await?;
    Ok(())
}

pub(crate) async fn create_user(pool: &Pool, user: UserRecord, device: DeviceRecord) -> StoreResult<()> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let inserted = exec(
        &tx,
        &format!("INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"),
        &[
            &id(user.id.0),
            &user.username,
            &user.password_hash,
            &user.display_name,
            &user.avatar,
            &privacy_to_i16(user.presence_privacy),
            &id(user.created_at_ms),
        ],
    )
    .await?;
    if inserted == 0 {
        return Err(rejected(ErrorCode::UsernameTaken));
    }
    insert_device(&tx, &device).await?;
    tx.commit().await.map_err(backend)
}

pub(crate) async fn create_device(pool: &Pool, device: DeviceRecord, devices_max: u32) -> StoreResult<()> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    // Lock the account row so two logins on two nodes cannot both pass the count.
    exec(&tx, "SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&id(device.user.0)]).await?;
    let count: i64 =
        query_one(&tx, "SELECT COUNT(*) FROM devices WHERE user_id = $1", &[&id(device.user.0)]).await?.get(0);
    if count >= i64::from(devices_max) {
        return Err(rejected(ErrorCode::TooManyDevices));
    }
    insert_device(&tx, &device).await?;
    tx.commit().await.map_err(backend)
}

pub(crate) async fn approve_device(
    pool: &Pool,
    user: UserId,
    code: &str,
    now_ms: u64,
    expires_at_ms: u64,
) -> StoreResult<DeviceId> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let row = query_opt(
        &tx,
        "UPDATE devices SET approved = TRUE, link_code = NULL, expires_at_ms = $1
             WHERE user_id = $2 AND approved = FALSE AND link_code = $3 AND expires_at_ms > $4 RETURNING id",
        &[&id(expires_at_ms), &id(user.0), &code, &id(now_ms)],
    )
    .await?;
    let Some(row) = row else { return Err(rejected(ErrorCode::LinkCodeInvalid)) };
    let device = DeviceId(uid(row.get(0)));
    start_cursors(&tx, device, user).await?;
    tx.commit().await.map_err(backend)?;
    Ok(device)
}

async fn delete_device<C: GenericClient>(c: &C, device: i64) -> StoreResult<()> {
    for sql in [
        "DELETE FROM devices WHERE id = $1",
        "DELETE FROM cursors WHERE device_id = $1",
        "DELETE FROM key_packages WHERE device_id = $1",
        "DELETE FROM welcome_targets WHERE device_id = $1",
    ] {
        exec(c, sql, &[&device]).await?;
    }
    Ok(())
}

pub(crate) async fn revoke_device(pool: &Pool, user: UserId, device: DeviceId) -> StoreResult<()> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let owner = query_opt(&tx, "SELECT user_id FROM devices WHERE id = $1", &[&id(device.0)]).await?;
    if owner.map(|r| r.get::<_, i64>(0)) != Some(id(user.0)) {
        return Err(rejected(ErrorCode::DeviceNotFound));
    }
    delete_device(&tx, id(device.0)).await?;
    tx.commit().await.map_err(backend)
}

pub(crate) async fn blocked_by(pool: &Pool, blocker: UserId) -> StoreResult<Vec<UserId>> {
    let rows = query(
        &client(pool).await?,
        "SELECT blocked FROM blocks WHERE blocker = $1 ORDER BY blocked",
        &[&id(blocker.0)],
    )
    .await?;
    Ok(rows.iter().map(|r| UserId(uid(r.get(0)))).collect())
}

pub(crate) async fn push_endpoints(pool: &Pool, devices: &[DeviceId]) -> StoreResult<Vec<(DeviceId, String)>> {
    let ids: Vec<i64> = devices.iter().map(|d| id(d.0)).collect();
    let rows = query(
        &client(pool).await?,
        "SELECT device_id, endpoint FROM push_endpoints WHERE device_id = ANY($1) ORDER BY device_id",
        &[&ids],
    )
    .await?;
    Ok(rows.iter().map(|r| (DeviceId(uid(r.get(0))), r.get(1))).collect())
}

// ---------------------------------------------------------------- conversations

async fn insert_member<C: GenericClient>(
    c: &C,
    conv: ConvId,
    user: UserId,
    admin: bool,
    at_ms: u64,
) -> StoreResult<()> {
    exec(
        c,
        "INSERT INTO members (conv_id, user_id, admin, joined_at_ms) VALUES ($1, $2, $3, $4)",
        &[&id(conv.0), &id(user.0), &admin, &id(at_ms)],
    )
    .await?;
    exec(c,
        "INSERT INTO cursors (device_id, conv_id, acked_seq)
         SELECT d.id, $1, (SELECT last_seq FROM conversations WHERE id = $1) FROM devices d WHERE d.user_id = $2 AND d.approved
         ON CONFLICT DO NOTHING",
        &[&id(conv.0), &id(user.0)],
    ).await?;
    Ok(())
}

pub(crate) async fn create_conversation(pool: &Pool, new: NewConversation) -> StoreResult<ConvId> {
    let key = match (new.kind, new.members.as_slice()) {
        (ConvKind::Direct, [peer]) => Some(direct_key(new.creator, *peer)),
        (ConvKind::Direct, _) => return Err(rejected(ErrorCode::InvalidArgument)),
        (ConvKind::Group, _) => None,
    };
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let inserted = exec(&tx,
            "INSERT INTO conversations (id, kind, name, epoch, last_seq, direct_key, created_at_ms) VALUES ($1, $2, $3, 0, 0, $4, $5)
             ON CONFLICT (direct_key) DO NOTHING",
            &[&id(new.id.0), &kind_to_i16(new.kind), &new.name, &key, &id(new.created_at_ms)],
        ).await?;
    if inserted == 0 {
        // The direct chat of this pair exists already (maybe created by the other side just now).
        let row = query_one(&tx, "SELECT id FROM conversations WHERE direct_key = $1", &[&key]).await?;
        return Ok(ConvId(uid(row.get(0))));
    }
    insert_member(&tx, new.id, new.creator, new.kind == ConvKind::Group, new.created_at_ms).await?;
    for user in new.members {
        insert_member(&tx, new.id, user, false, new.created_at_ms).await?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(new.id)
}

pub(crate) async fn conversation(pool: &Pool, conv: ConvId) -> StoreResult<Option<ConversationRecord>> {
    let row = query_opt(
        &client(pool).await?,
        "SELECT kind, name, epoch, last_seq, created_at_ms FROM conversations WHERE id = $1",
        &[&id(conv.0)],
    )
    .await?;
    Ok(row.map(|r| ConversationRecord {
        id: conv,
        kind: kind_from_i16(r.get(0)),
        name: r.get(1),
        epoch: uid(r.get(2)),
        last_seq: uid(r.get(3)),
        created_at_ms: uid(r.get(4)),
    }))
}

pub(crate) async fn members(pool: &Pool, conv: ConvId) -> StoreResult<Vec<MemberRecord>> {
    let rows = query(
        &client(pool).await?,
        "SELECT user_id, admin FROM members WHERE conv_id = $1 ORDER BY joined_at_ms, user_id",
        &[&id(conv.0)],
    )
    .await?;
    Ok(rows.iter().map(|r| MemberRecord { user: UserId(uid(r.get(0))), admin: r.get(1) }).collect())
}

pub(crate) async fn member_devices(pool: &Pool, conv: ConvId) -> StoreResult<Vec<(UserId, DeviceId)>> {
    let rows = query(&client(pool).await?,
            "SELECT m.user_id, d.id FROM members m JOIN devices d ON d.user_id = m.user_id WHERE m.conv_id = $1 AND d.approved",
            &[&id(conv.0)],
        ).await?;
    Ok(rows.iter().map(|r| (UserId(uid(r.get(0))), DeviceId(uid(r.get(1))))).collect())
}

pub(crate) async fn conversations_of(pool: &Pool, user: UserId) -> StoreResult<Vec<ConversationSummary>> {
    let rows = query(
        &client(pool).await?,
        "SELECT c.id, c.kind, c.name, c.epoch, c.last_seq, (SELECT COUNT(*) FROM members m2 WHERE m2.conv_id = c.id)
             FROM members m JOIN conversations c ON c.id = m.conv_id WHERE m.user_id = $1 ORDER BY c.created_at_ms",
        &[&id(user.0)],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| ConversationSummary {
            conv: ConvId(uid(r.get(0))),
            kind: kind_from_i16(r.get(1)),
            name: r.get(2),
            epoch: uid(r.get(3)),
            last_seq: uid(r.get(4)),
            member_count: r.get::<_, i64>(5) as u32,
        })
        .collect())
}

/// Locks the conversation row: membership changes of one conversation run one at a time.
async fn lock_conversation<C: GenericClient>(c: &C, conv: ConvId) -> StoreResult<()> {
    let found = query_opt(c, "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", &[&id(conv.0)]).await?;
    if found.is_none() {
        return Err(rejected(ErrorCode::ConversationNotFound));
    }
    Ok(())
}

async fn add_members_in<C: GenericClient>(
    c: &C,
    conv: ConvId,
    users: Vec<UserId>,
    max: u32,
    at_ms: u64,
) -> StoreResult<()> {
    lock_conversation(c, conv).await?;
    let present: Vec<i64> = query(c, "SELECT user_id FROM members WHERE conv_id = $1", &[&id(conv.0)])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let new: Vec<UserId> = users.into_iter().filter(|u| !present.contains(&id(u.0))).collect();
    if new.is_empty() {
        return Err(rejected(ErrorCode::AlreadyMember));
    }
    if present.len() + new.len() > max as usize {
        return Err(rejected(ErrorCode::TooManyMembers));
    }
    for user in new {
        insert_member(c, conv, user, false, at_ms).await?;
    }
    Ok(())
}

pub(crate) async fn add_members(
    pool: &Pool,
    conv: ConvId,
    users: Vec<UserId>,
    max: u32,
    at_ms: u64,
) -> StoreResult<()> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    add_members_in(&tx, conv, users, max, at_ms).await?;
    tx.commit().await.map_err(backend)
}

pub(crate) async fn remove_member(pool: &Pool, conv: ConvId, user: UserId) -> StoreResult<()> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    lock_conversation(&tx, conv).await?;
    let removed =
        exec(&tx, "DELETE FROM members WHERE conv_id = $1 AND user_id = $2", &[&id(conv.0), &id(user.0)]).await?;
    if removed == 0 {
        return Err(rejected(ErrorCode::NotMember));
    }
    exec(
        &tx,
        "DELETE FROM cursors WHERE conv_id = $1 AND device_id IN (SELECT id FROM devices WHERE user_id = $2)",
        &[&id(conv.0), &id(user.0)],
    )
    .await?;
    let left: i64 = query_one(&tx, "SELECT COUNT(*) FROM members WHERE conv_id = $1", &[&id(conv.0)]).await?.get(0);
    if left == 0 {
        for sql in [
            "DELETE FROM conversations WHERE id = $1",
            "DELETE FROM messages WHERE conv_id = $1",
            "DELETE FROM invites WHERE conv_id = $1",
        ] {
            exec(&tx, sql, &[&id(conv.0)]).await?;
        }
    } else {
        // A group always keeps an admin: promote the longest-standing member if none is left.
        exec(
            &tx,
            "UPDATE members SET admin = TRUE WHERE conv_id = $1
               AND NOT EXISTS (SELECT 1 FROM members WHERE conv_id = $1 AND admin)
               AND user_id = (SELECT user_id FROM members WHERE conv_id = $1 ORDER BY joined_at_ms, user_id LIMIT 1)
               AND (SELECT kind FROM conversations WHERE id = $1) = 1",
            &[&id(conv.0)],
        )
        .await?;
    }
    tx.commit().await.map_err(backend)
}

pub(crate) async fn set_admin(pool: &Pool, conv: ConvId, user: UserId, admin: bool) -> StoreResult<()> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    lock_conversation(&tx, conv).await?;
    let changed = exec(
        &tx,
        "UPDATE members SET admin = $1 WHERE conv_id = $2 AND user_id = $3",
        &[&admin, &id(conv.0), &id(user.0)],
    )
    .await?;
    if changed == 0 {
        return Err(rejected(ErrorCode::NotMember));
    }
    let admins: i64 =
        query_one(&tx, "SELECT COUNT(*) FROM members WHERE conv_id = $1 AND admin", &[&id(conv.0)]).await?.get(0);
    if admins == 0 {
        return Err(rejected(ErrorCode::InvalidArgument));
    }
    tx.commit().await.map_err(backend)
}

pub(crate) async fn create_invite(pool: &Pool, invite: InviteRecord) -> StoreResult<()> {
    execute(
        pool,
        "INSERT INTO invites (code, conv_id, created_by, expires_at_ms, max_uses, uses, revoked) VALUES ($1, $2, $3, $4, $5, 0, FALSE)",
        &[&invite.code, &id(invite.conv.0), &id(invite.created_by.0), &id(invite.expires_at_ms), &(invite.max_uses as i32)],
    )
    .await
}

pub(crate) async fn invite(pool: &Pool, code: &str) -> StoreResult<Option<InviteRecord>> {
    let row = query_opt(
        &client(pool).await?,
        "SELECT conv_id, created_by, expires_at_ms, max_uses, uses, revoked FROM invites WHERE code = $1",
        &[&code],
    )
    .await?;
    Ok(row.map(|r| InviteRecord {
        code: code.to_owned(),
        conv: ConvId(uid(r.get(0))),
        created_by: UserId(uid(r.get(1))),
        expires_at_ms: uid(r.get(2)),
        max_uses: r.get::<_, i32>(3) as u32,
        uses: r.get::<_, i32>(4) as u32,
        revoked: r.get(5),
    }))
}

pub(crate) async fn revoke_invite(pool: &Pool, code: &str) -> StoreResult<()> {
    let changed = exec(&client(pool).await?, "UPDATE invites SET revoked = TRUE WHERE code = $1", &[&code]).await?;
    if changed == 0 {
        return Err(rejected(ErrorCode::InviteNotFound));
    }
    Ok(())
}

pub(crate) async fn join_invite(pool: &Pool, code: &str, user: UserId, now_ms: u64, max: u32) -> StoreResult<ConvId> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let used = query_opt(&tx,
            "UPDATE invites SET uses = uses + 1 WHERE code = $1 AND NOT revoked AND expires_at_ms > $2 AND uses < max_uses RETURNING conv_id",
            &[&code, &id(now_ms)],
        ).await?;
    let Some(row) = used else {
        let invite = query_opt(&tx, "SELECT revoked, expires_at_ms FROM invites WHERE code = $1", &[&code]).await?;
        return Err(rejected(match invite {
            None => ErrorCode::InviteNotFound,
            Some(r) if r.get::<_, bool>(0) => ErrorCode::InviteRevoked,
            Some(r) if uid(r.get(1)) <= now_ms => ErrorCode::InviteExpired,
            Some(_) => ErrorCode::InviteExhausted,
        }));
    };
    let conv = ConvId(uid(row.get(0)));
    add_members_in(&tx, conv, vec![user], max, now_ms).await?;
    tx.commit().await.map_err(backend)?;
    Ok(conv)
}

// ---------------------------------------------------------------- key packages

pub(crate) async fn key_package_count(pool: &Pool, device: DeviceId) -> StoreResult<(u32, bool)> {
    let row = query_one(&client(pool).await?,
            "SELECT COUNT(*) FILTER (WHERE NOT last_resort), COUNT(*) FILTER (WHERE last_resort) FROM key_packages WHERE device_id = $1",
            &[&id(device.0)],
        ).await?;
    Ok((row.get::<_, i64>(0) as u32, row.get::<_, i64>(1) > 0))
}

pub(crate) async fn upload_key_packages(
    pool: &Pool,
    device: DeviceId,
    packages: Vec<Vec<u8>>,
    last_resort: Option<Vec<u8>>,
    max: u32,
) -> StoreResult<u32> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    exec(&tx, "SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", &[&id(device.0)]).await?;
    let stored: i64 =
        query_one(&tx, "SELECT COUNT(*) FROM key_packages WHERE device_id = $1 AND NOT last_resort", &[&id(device.0)])
            .await?
            .get(0);
    if stored as usize + packages.len() > max as usize {
        return Err(rejected(ErrorCode::TooManyKeyPackages));
    }
    for package in &packages {
        exec(
            &tx,
            "INSERT INTO key_packages (device_id, last_resort, data) VALUES ($1, FALSE, $2)",
            &[&id(device.0), package],
        )
        .await?;
    }
    if let Some(package) = &last_resort {
        exec(&tx, "DELETE FROM key_packages WHERE device_id = $1 AND last_resort", &[&id(device.0)]).await?;
        exec(
            &tx,
            "INSERT INTO key_packages (device_id, last_resort, data) VALUES ($1, TRUE, $2)",
            &[&id(device.0), package],
        )
        .await?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(stored as u32 + packages.len() as u32)
}

pub(crate) async fn claim_key_packages(pool: &Pool, user: UserId) -> StoreResult<Vec<ClaimedKeyPackage>> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let devices: Vec<i64> =
        query(&tx, "SELECT id FROM devices WHERE user_id = $1 AND approved ORDER BY created_at_ms, id", &[&id(user.0)])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
    let mut claimed = Vec::with_capacity(devices.len());
    for device in devices {
        // SKIP LOCKED: a concurrent claim on another node takes the next package instead of
        // waiting, and the DELETE makes each package go to exactly one claimer.
        let one_time = query_opt(&tx,
                "DELETE FROM key_packages WHERE id = (
                    SELECT id FROM key_packages WHERE device_id = $1 AND NOT last_resort ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING data",
                &[&device],
            ).await?;
        if let Some(row) = one_time {
            claimed.push(ClaimedKeyPackage { device: DeviceId(uid(device)), package: row.get(0), last_resort: false });
            continue;
        }
        let last_resort =
            query_opt(&tx, "SELECT data FROM key_packages WHERE device_id = $1 AND last_resort", &[&device]).await?;
        if let Some(row) = last_resort {
            claimed.push(ClaimedKeyPackage { device: DeviceId(uid(device)), package: row.get(0), last_resort: true });
        }
    }
    if claimed.is_empty() {
        return Err(rejected(ErrorCode::NoKeyPackage));
    }
    tx.commit().await.map_err(backend)?;
    Ok(claimed)
}

// ---------------------------------------------------------------- delivery

struct SentBefore {
    conv: ConvId,
    seq: Seq,
    epoch_after: Option<u64>,
}

async fn sent_before<C: GenericClient>(c: &C, device: DeviceId, msg_id: &MsgId) -> StoreResult<Option<SentBefore>> {
    let row = query_opt(
        c,
        "SELECT conv_id, seq, epoch_after FROM sent_ids WHERE device_id = $1 AND msg_id = $2",
        &[&id(device.0), &&msg_id.0[..]],
    )
    .await?;
    Ok(row.map(|r| SentBefore {
        conv: ConvId(uid(r.get(0))),
        seq: uid(r.get(1)),
        epoch_after: r.get::<_, Option<i64>>(2).map(uid),
    }))
}

#[allow(clippy::too_many_arguments)]
async fn insert_message<C: GenericClient>(
    c: &C,
    conv: ConvId,
    seq: Seq,
    sender: UserId,
    device: DeviceId,
    msg_id: &MsgId,
    kind: i16,
    epoch: u64,
    at_ms: u64,
    payload: &[u8],
    epoch_after: Option<u64>,
) -> StoreResult<()> {
    exec(
        c,
        "INSERT INTO messages (conv_id, seq, sender, sender_device, msg_id, kind, epoch, sent_at_ms, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[&id(conv.0), &id(seq), &id(sender.0), &id(device.0), &&msg_id.0[..], &kind, &id(epoch), &id(at_ms), &payload],
    )
    .await?;
    exec(
        c,
        "INSERT INTO sent_ids (device_id, msg_id, conv_id, seq, epoch_after, at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&id(device.0), &&msg_id.0[..], &id(conv.0), &id(seq), &epoch_after.map(id), &id(at_ms)],
    )
    .await?;
    Ok(())
}

/// Appends one message inside the caller's transaction (the batch writer's).
pub(crate) async fn append_message_in<C: GenericClient>(c: &C, m: &NewMessage) -> StoreResult<Appended> {
    if let Some(before) = sent_before(c, m.sender_device, &m.msg_id).await? {
        if before.conv != m.conv || before.epoch_after.is_some() {
            return Err(rejected(ErrorCode::MessageIdReused));
        }
        return Ok(Appended { seq: before.seq, duplicate: true });
    }
    // The row lock taken here orders this conversation's seqs across nodes until commit.
    let row = query_opt(
        c,
        "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq",
        &[&id(m.conv.0)],
    )
    .await?;
    let Some(row) = row else { return Err(rejected(ErrorCode::ConversationNotFound)) };
    let seq = uid(row.get(0));
    // A concurrent first send of the same id on another node makes this insert conflict; the
    // job fails and the client's retry then finds the stored id.
    insert_message(c, m.conv, seq, m.sender, m.sender_device, &m.msg_id, 0, 0, m.at_ms, &m.payload, None).await?;
    Ok(Appended { seq, duplicate: false })
}

pub(crate) async fn append_commit(pool: &Pool, commit: NewCommit) -> StoreResult<CommitAccepted> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    lock_conversation(&tx, commit.conv).await?;
    if let Some(before) = sent_before(&tx, commit.sender_device, &commit.msg_id).await? {
        return match before.epoch_after {
            Some(epoch) if before.conv == commit.conv => Ok(CommitAccepted { seq: before.seq, epoch, duplicate: true }),
            _ => Err(rejected(ErrorCode::MessageIdReused)),
        };
    }
    let accepted = query_opt(&tx,
            "UPDATE conversations SET last_seq = last_seq + 1, epoch = epoch + 1 WHERE id = $1 AND epoch = $2 RETURNING last_seq, epoch",
            &[&id(commit.conv.0), &id(commit.epoch)],
        ).await?;
    let Some(row) = accepted else {
        let current: i64 =
            query_one(&tx, "SELECT epoch FROM conversations WHERE id = $1", &[&id(commit.conv.0)]).await?.get(0);
        return Err(StoreError::EpochMismatch { current: uid(current) });
    };
    let (seq, epoch) = (uid(row.get(0)), uid(row.get(1)));
    insert_message(
        &tx,
        commit.conv,
        seq,
        commit.sender,
        commit.sender_device,
        &commit.msg_id,
        1,
        commit.epoch,
        commit.at_ms,
        &commit.commit,
        Some(epoch),
    )
    .await?;
    if let Some(welcome) = commit.welcome {
        exec(
            &tx,
            "INSERT INTO welcomes (id, conv_id, payload, created_at_ms) VALUES ($1, $2, $3, $4)",
            &[&id(welcome.id), &id(commit.conv.0), &welcome.payload, &id(commit.at_ms)],
        )
        .await?;
        for device in welcome.devices {
            exec(
                &tx,
                "INSERT INTO welcome_targets (device_id, welcome_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id(device.0), &id(welcome.id)],
            )
            .await?;
        }
    }
    tx.commit().await.map_err(backend)?;
    Ok(CommitAccepted { seq, epoch, duplicate: false })
}

pub(crate) async fn messages_after(pool: &Pool, conv: ConvId, after: Seq, limit: u32) -> StoreResult<Vec<Message>> {
    let rows = query(
        &client(pool).await?,
        "SELECT seq, sender, sender_device, msg_id, kind, epoch, sent_at_ms, payload FROM messages
             WHERE conv_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        &[&id(conv.0), &id(after), &i64::from(limit)],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let raw: Vec<u8> = r.get(3);
            let mut msg_id = [0u8; 16];
            if raw.len() == 16 {
                msg_id.copy_from_slice(&raw);
            }
            let kind = if r.get::<_, i16>(4) == 1 {
                MessageKind::Commit { epoch: uid(r.get(5)) }
            } else {
                MessageKind::Application
            };
            Message {
                conv,
                seq: uid(r.get(0)),
                sender: UserId(uid(r.get(1))),
                sender_device: DeviceId(uid(r.get(2))),
                msg_id: MsgId(msg_id),
                kind,
                sent_at_ms: uid(r.get(6)),
                payload: r.get(7),
            }
        })
        .collect())
}

pub(crate) async fn cursors(pool: &Pool, device: DeviceId) -> StoreResult<Vec<(ConvId, Seq)>> {
    let rows =
        query(&client(pool).await?, "SELECT conv_id, acked_seq FROM cursors WHERE device_id = $1", &[&id(device.0)])
            .await?;
    Ok(rows.iter().map(|r| (ConvId(uid(r.get(0))), uid(r.get(1)))).collect())
}

pub(crate) async fn ack_in<C: GenericClient>(c: &C, device: DeviceId, conv: ConvId, seq: Seq) -> StoreResult<()> {
    let changed = exec(
        c,
        "UPDATE cursors SET acked_seq = GREATEST(acked_seq, $1) WHERE device_id = $2 AND conv_id = $3",
        &[&id(seq), &id(device.0), &id(conv.0)],
    )
    .await?;
    if changed == 0 {
        return Err(rejected(ErrorCode::ConversationNotFound));
    }
    Ok(())
}

pub(crate) async fn client_for_batch(pool: &Pool) -> StoreResult<deadpool_postgres::Object> {
    client(pool).await
}

pub(crate) fn to_backend<E: std::fmt::Display>(error: E) -> StoreError {
    backend(error)
}

pub(crate) async fn pending_welcomes(pool: &Pool, device: DeviceId) -> StoreResult<Vec<PendingWelcome>> {
    let rows = query(
        &client(pool).await?,
        "SELECT w.id, w.conv_id, w.payload FROM welcome_targets t JOIN welcomes w ON w.id = t.welcome_id
             WHERE t.device_id = $1 ORDER BY w.created_at_ms",
        &[&id(device.0)],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| PendingWelcome { id: uid(r.get(0)), conv: ConvId(uid(r.get(1))), payload: r.get(2) })
        .collect())
}

pub(crate) async fn ack_welcome(pool: &Pool, device: DeviceId, welcome: u64) -> StoreResult<()> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let removed = exec(
        &tx,
        "DELETE FROM welcome_targets WHERE device_id = $1 AND welcome_id = $2",
        &[&id(device.0), &id(welcome)],
    )
    .await?;
    if removed == 0 {
        return Err(rejected(ErrorCode::UnknownWelcome));
    }
    exec(
        &tx,
        "DELETE FROM welcomes WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM welcome_targets WHERE welcome_id = $1)",
        &[&id(welcome)],
    )
    .await?;
    tx.commit().await.map_err(backend)
}

pub(crate) async fn collect_garbage(pool: &Pool, now_ms: u64, retention_ms: u64) -> StoreResult<Collected> {
    let cutoff = id(now_ms.saturating_sub(retention_ms));
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let acked = exec(
        &tx,
        "DELETE FROM messages m WHERE m.seq <= COALESCE(
                (SELECT MIN(acked_seq) FROM cursors c WHERE c.conv_id = m.conv_id), m.seq)",
        &[],
    )
    .await?;
    let expired = exec(&tx, "DELETE FROM messages WHERE sent_at_ms < $1", &[&cutoff]).await?;
    exec(&tx, "DELETE FROM sent_ids WHERE at_ms < $1", &[&cutoff]).await?;
    exec(&tx, "DELETE FROM welcomes WHERE created_at_ms < $1", &[&cutoff]).await?;
    exec(
        &tx,
        "DELETE FROM welcome_targets t WHERE NOT EXISTS (SELECT 1 FROM welcomes w WHERE w.id = t.welcome_id)",
        &[],
    )
    .await?;
    let stale: Vec<i64> = query(&tx, "SELECT id FROM devices WHERE expires_at_ms <= $1 LIMIT 1000", &[&id(now_ms)])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for device in &stale {
        delete_device(&tx, *device).await?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(Collected { messages: acked + expired, expired_devices: stale.iter().map(|d| DeviceId(uid(*d))).collect() })
}
