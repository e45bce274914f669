//! Diesel table definitions for the catalog. They mirror the migrations in
//! `streamcore/migrations/{sqlite,postgres,mysql}` (see those files for what
//! every column means; later steps alter what the first one created); one
//! definition serves all three backends because the migrations use types
//! that map to the same diesel SQL types everywhere.

diesel::table! {
    devices (sim) {
        sim -> Text,
        plate -> Nullable<Text>,
        auth_code -> Nullable<Text>,
        registered_ms -> Nullable<BigInt>,
        first_seen_ms -> BigInt,
        last_seen_ms -> BigInt,
    }
}

diesel::table! {
    positions (sim, device_time_ms) {
        sim -> Text,
        device_time_ms -> BigInt,
        lat -> Double,
        lon -> Double,
        speed_kmh -> Float,
        heading -> Integer,
        altitude_m -> Integer,
        alarm -> BigInt,
        status -> BigInt,
    }
}

diesel::table! {
    streams (name) {
        name -> Text,
        sim -> Nullable<Text>,
        channel -> Nullable<Integer>,
        created_ms -> BigInt,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        stream -> Text,
        sim -> Nullable<Text>,
        channel -> Nullable<Integer>,
        kind -> Text,
        started_ms -> BigInt,
        ended_ms -> Nullable<BigInt>,
        host -> Text,
    }
}

diesel::table! {
    segments (stream, sequence) {
        stream -> Text,
        sequence -> BigInt,
        session_id -> Text,
        start_pts -> BigInt,
        duration_90k -> BigInt,
        bytes -> BigInt,
        path -> Text,
        program_date_time_ms -> BigInt,
        end_ms -> BigInt,
        discontinuity -> Bool,
        created_ms -> BigInt,
    }
}

diesel::table! {
    incidents (id) {
        id -> BigInt,
        sim -> Text,
        channel -> Integer,
        from_ms -> BigInt,
        to_ms -> BigInt,
        kind -> Text,
        source -> Text,
        created_ms -> BigInt,
        session_id -> Nullable<Text>,
        open -> Bool,
        alarm -> BigInt,
        lat -> Nullable<Double>,
        lon -> Nullable<Double>,
        video_state -> Nullable<Text>,
        video_reason -> Nullable<Text>,
    }
}

// 16 columns: the most a table may have while diesel is built without its
// `32-column-tables` feature (which costs compile time in every build).
diesel::table! {
    playbacks (id) {
        id -> Text,
        sim -> Text,
        channel -> Integer,
        stream -> Text,
        from_ms -> BigInt,
        to_ms -> BigInt,
        av_type -> Integer,
        stream_type -> Integer,
        storage_type -> Integer,
        mode -> Integer,
        speed -> Integer,
        requested_ms -> BigInt,
        state -> Text,
        reason -> Nullable<Text>,
        session_id -> Nullable<Text>,
        incident_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    pending_deletions (path) {
        path -> Text,
        queued_ms -> BigInt,
    }
}

diesel::table! {
    terminals (sim) {
        sim -> Text,
        maker_id -> Text,
        model -> Text,
        terminal_id -> Text,
        plate_color -> Integer,
        province -> Integer,
        city -> Integer,
        registered_ms -> BigInt,
    }
}

diesel::table! {
    settings (name) {
        name -> Text,
        value -> Text,
        updated_ms -> BigInt,
    }
}

diesel::table! {
    allowed_sims (sim) {
        sim -> Text,
        note -> Nullable<Text>,
        added_ms -> BigInt,
    }
}

diesel::table! {
    users (name) {
        name -> Text,
        role -> Text,
        password_hash -> Text,
        created_ms -> BigInt,
        disabled -> Bool,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        user_name -> Text,
        secret_sha256 -> Text,
        label -> Nullable<Text>,
        created_ms -> BigInt,
    }
}

diesel::table! {
    grants (user_name, target) {
        user_name -> Text,
        target -> Text,
    }
}

diesel::table! {
    device_groups (sim, group_name) {
        sim -> Text,
        group_name -> Text,
    }
}

diesel::table! {
    audit_log (id) {
        id -> BigInt,
        at_ms -> BigInt,
        actor -> Text,
        action -> Text,
        target -> Text,
        detail -> Nullable<Text>,
        client -> Nullable<Text>,
    }
}

diesel::table! {
    viewers (stream, instance) {
        stream -> Text,
        instance -> Text,
        last_ms -> BigInt,
    }
}

diesel::table! {
    ingest_nodes (id) {
        id -> Text,
        control_url -> Text,
        media_addr -> Nullable<Text>,
        started_ms -> BigInt,
        heartbeat_ms -> BigInt,
    }
}

diesel::table! {
    device_nodes (sim) {
        sim -> Text,
        node -> Text,
        since_ms -> BigInt,
    }
}

diesel::table! {
    stream_leases (stream) {
        stream -> Text,
        node -> Text,
        fence -> BigInt,
        source_started_ms -> BigInt,
        last_sequence -> Nullable<BigInt>,
        renewed_ms -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    devices,
    positions,
    streams,
    sessions,
    segments,
    incidents,
    playbacks,
    pending_deletions,
    terminals,
    settings,
    allowed_sims,
    users,
    api_keys,
    grants,
    device_groups,
    audit_log,
    viewers,
    ingest_nodes,
    device_nodes,
    stream_leases,
);
