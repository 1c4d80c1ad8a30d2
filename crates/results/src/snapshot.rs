//! What the page shows: the counters of the Redis contract read in one round trip.

use std::collections::HashMap;

use redis::aio::ConnectionManager;
use serde::Serialize;

use vote_store::keys;

/// How many albums the page lists.
pub const TOP_ALBUMS: usize = 10;
/// How many of the latest votes the page lists.
pub const RECENT_VOTES: usize = 20;

/// One band's or path's count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    pub name: String,
    pub votes: u64,
}

/// One album's count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlbumCount {
    pub band: String,
    pub album: String,
    pub votes: u64,
}

/// The live results at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub total: u64,
    /// Every band, most votes first.
    pub bands: Vec<Count>,
    /// Every path (`wasm`, `grpc`, ...), most votes first.
    pub paths: Vec<Count>,
    /// The most voted albums, most votes first.
    pub top_albums: Vec<AlbumCount>,
    /// The latest votes, newest first, as the consumer stored them.
    pub recent: Vec<serde_json::Value>,
    /// When this snapshot was read (unix milliseconds).
    pub read_at_ms: i64,
}

/// Counts sorted by votes (descending), then by name.
fn sorted(map: HashMap<String, u64>) -> Vec<Count> {
    let mut counts: Vec<Count> = map.into_iter().map(|(name, votes)| Count { name, votes }).collect();
    counts.sort_by(|a, b| b.votes.cmp(&a.votes).then_with(|| a.name.cmp(&b.name)));
    counts
}

/// The most voted albums; fields that do not decode are skipped.
fn top_albums(map: HashMap<String, u64>) -> Vec<AlbumCount> {
    let mut albums: Vec<AlbumCount> = map
        .into_iter()
        .filter_map(|(field, votes)| {
            let (band, album) = vote_store::decode_album_field(&field)?;
            Some(AlbumCount { band, album, votes })
        })
        .collect();
    albums.sort_by(|a, b| b.votes.cmp(&a.votes).then_with(|| (&a.band, &a.album).cmp(&(&b.band, &b.album))));
    albums.truncate(TOP_ALBUMS);
    albums
}

/// `{votes}:total`, 0 when absent.
pub async fn read_total(redis: &mut ConnectionManager) -> redis::RedisResult<u64> {
    let total: Option<u64> = redis::cmd("GET").arg(keys::TOTAL).query_async(redis).await?;
    Ok(total.unwrap_or(0))
}

/// Reads every counter in one pipelined round trip.
pub async fn read(redis: &mut ConnectionManager) -> redis::RedisResult<Snapshot> {
    type Reply = (Option<u64>, HashMap<String, u64>, HashMap<String, u64>, HashMap<String, u64>, Vec<String>);
    let (total, bands, paths, albums, recent): Reply = redis::pipe()
        .get(keys::TOTAL)
        .hgetall(keys::BANDS)
        .hgetall(keys::PATHS)
        .hgetall(keys::ALBUMS)
        .lrange(keys::RECENT, 0, RECENT_VOTES as isize - 1)
        .query_async(redis)
        .await?;
    Ok(Snapshot {
        total: total.unwrap_or(0),
        bands: sorted(bands),
        paths: sorted(paths),
        top_albums: top_albums(albums),
        recent: recent.iter().filter_map(|entry| serde_json::from_str(entry).ok()).collect(),
        read_at_ms: vote_core::now_ms(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sort_by_votes_then_name() {
        let map = HashMap::from([("b".to_owned(), 2), ("a".to_owned(), 2), ("c".to_owned(), 5)]);
        let names: Vec<String> = sorted(map).into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["c", "a", "b"]);
    }

    #[test]
    fn top_albums_decode_escaped_fields_and_keep_the_first_ten() {
        let mut map: HashMap<String, u64> = (0..15).map(|i| (format!("band{i}|album"), i)).collect();
        map.insert(vote_store::encode_album_field("A|B", r"C\D"), 100);
        let albums = top_albums(map);
        assert_eq!(albums.len(), TOP_ALBUMS);
        assert_eq!(albums[0], AlbumCount { band: "A|B".into(), album: r"C\D".into(), votes: 100 });
        assert_eq!(albums[1].band, "band14");
    }
}
