-- Views for analysts over the events the workers applied (score_events: one row per accepted event, deduplicated
-- by event id). analytics/README.md lists the question each one answers. Days and weeks are UTC; weeks are ISO
-- weeks (Monday to Sunday), named by their Monday. A user is *active* on a day when at least one of their events
-- occurred on it. These are plain views, computed when queried: for questions over history, not for a dashboard
-- that polls.

CREATE VIEW analytics_user_days AS
    SELECT user_id, (occurred_at AT TIME ZONE 'UTC')::date AS day, count(*)::bigint AS events, sum(points)::bigint AS points
    FROM score_events
    GROUP BY user_id, (occurred_at AT TIME ZONE 'UTC')::date;

CREATE VIEW analytics_daily_active_users AS
    SELECT day, count(*)::bigint AS active_users, sum(events)::bigint AS events, sum(points)::bigint AS points
    FROM analytics_user_days
    GROUP BY day;

CREATE VIEW analytics_weekly_active_users AS
    SELECT date_trunc('week', day::timestamp)::date AS week, count(DISTINCT user_id)::bigint AS active_users,
           sum(events)::bigint AS events, sum(points)::bigint AS points
    FROM analytics_user_days
    GROUP BY date_trunc('week', day::timestamp)::date;

CREATE VIEW analytics_monthly_active_users AS
    SELECT date_trunc('month', day::timestamp)::date AS month, count(DISTINCT user_id)::bigint AS active_users,
           sum(events)::bigint AS events, sum(points)::bigint AS points
    FROM analytics_user_days
    GROUP BY date_trunc('month', day::timestamp)::date;

-- D1 and D7 retention by the day a user was first seen: of the users whose first event fell on cohort_day, how
-- many were active exactly one day and exactly seven days later. The rates are NULL until that day is complete
-- enough to have happened (cohort_day + 1 or + 7 not after today).
CREATE VIEW analytics_retention AS
    WITH first_seen AS (
        SELECT user_id, min(day) AS cohort_day FROM analytics_user_days GROUP BY user_id
    )
    SELECT f.cohort_day,
           count(*)::bigint AS cohort_size,
           count(d1.user_id)::bigint AS d1_retained,
           CASE WHEN f.cohort_day + 1 <= (now() AT TIME ZONE 'UTC')::date
                THEN round(count(d1.user_id)::numeric / count(*), 4) END AS d1_rate,
           count(d7.user_id)::bigint AS d7_retained,
           CASE WHEN f.cohort_day + 7 <= (now() AT TIME ZONE 'UTC')::date
                THEN round(count(d7.user_id)::numeric / count(*), 4) END AS d7_rate
    FROM first_seen f
    LEFT JOIN analytics_user_days d1 ON d1.user_id = f.user_id AND d1.day = f.cohort_day + 1
    LEFT JOIN analytics_user_days d7 ON d7.user_id = f.user_id AND d7.day = f.cohort_day + 7
    GROUP BY f.cohort_day;

-- Weekly cohorts: users by the ISO week they were first seen, and how many of them were active in each later week
-- (week_offset 0 is the cohort's own week, where every member is active).
CREATE VIEW analytics_weekly_cohorts AS
    WITH user_weeks AS (
        SELECT DISTINCT user_id, date_trunc('week', day::timestamp)::date AS week FROM analytics_user_days
    ), cohorts AS (
        SELECT user_id, min(week) AS cohort_week FROM user_weeks GROUP BY user_id
    ), sizes AS (
        SELECT cohort_week, count(*)::bigint AS cohort_size FROM cohorts GROUP BY cohort_week
    )
    SELECT c.cohort_week, ((w.week - c.cohort_week) / 7)::integer AS week_offset,
           count(*)::bigint AS active_users, s.cohort_size,
           round(count(*)::numeric / s.cohort_size, 4) AS retention_rate
    FROM cohorts c
    JOIN user_weeks w ON w.user_id = c.user_id
    JOIN sizes s ON s.cohort_week = c.cohort_week
    GROUP BY c.cohort_week, w.week, s.cohort_size;

-- Weekly churn: of the users active in the previous ISO week, how many were not active in this one.
CREATE VIEW analytics_weekly_churn AS
    WITH user_weeks AS (
        SELECT DISTINCT user_id, date_trunc('week', day::timestamp)::date AS week FROM analytics_user_days
    ), followed AS (
        SELECT p.week + 7 AS week, c.user_id IS NULL AS churned
        FROM user_weeks p
        LEFT JOIN user_weeks c ON c.user_id = p.user_id AND c.week = p.week + 7
    )
    SELECT week, count(*)::bigint AS previous_week_active, count(*) FILTER (WHERE churned)::bigint AS churned,
           round(count(*) FILTER (WHERE churned)::numeric / count(*), 4) AS churn_rate
    FROM followed
    WHERE week <= date_trunc('week', now() AT TIME ZONE 'UTC')::date
    GROUP BY week;

-- Points and events per UTC day, by action, by region and by guild (an event without a region or guild counts
-- under NULL).
CREATE VIEW analytics_daily_by_action AS
    SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, action, count(*)::bigint AS events, sum(points)::bigint AS points
    FROM score_events GROUP BY 1, 2;

CREATE VIEW analytics_daily_by_region AS
    SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, region, count(*)::bigint AS events, sum(points)::bigint AS points
    FROM score_events GROUP BY 1, 2;

CREATE VIEW analytics_daily_by_guild AS
    SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, guild, count(*)::bigint AS events, sum(points)::bigint AS points
    FROM score_events GROUP BY 1, 2;

-- The most frequent actions over the last seven days (the current UTC day and the six before it).
CREATE VIEW analytics_top_actions_7d AS
    SELECT action, count(*)::bigint AS events, sum(points)::bigint AS points,
           rank() OVER (ORDER BY count(*) DESC)::bigint AS rank
    FROM score_events
    WHERE occurred_at >= ((now() AT TIME ZONE 'UTC')::date - 6)::timestamp AT TIME ZONE 'UTC'
    GROUP BY action;
