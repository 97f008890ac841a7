CREATE OR REPLACE VIEW {{ schema }}.queue_stats AS
WITH queue AS (
    SELECT q.deployment_hash,
           count(*) FILTER (WHERE q.lease_expires_at IS NULL) AS queued,
           count(*) FILTER (WHERE q.lease_expires_at IS NOT NULL) AS in_flight,
           min(q.created_at) FILTER (WHERE q.lease_expires_at IS NULL) AS oldest_queued_at,
           count(*) FILTER (WHERE q.lease_expires_at <= now()) AS expired_leases
      FROM {{ schema }}.command_queue q
     GROUP BY q.deployment_hash
)
SELECT coalesce(queue.deployment_hash, a.deployment_hash)::text AS deployment_hash,
       coalesce(queue.queued, 0) AS queued,
       coalesce(queue.in_flight, 0) AS in_flight,
       queue.oldest_queued_at,
       coalesce(queue.expired_leases, 0) AS expired_leases,
       a.last_heartbeat AS agent_last_seen
  FROM queue
  FULL JOIN {{ schema }}.agents a ON a.deployment_hash = queue.deployment_hash;
