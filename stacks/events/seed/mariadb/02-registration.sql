-- The event registration opens for. The Django migrations (migrate-registration)
-- create the service's own tables; this one is the source of truth it reads.
CREATE TABLE IF NOT EXISTS registration.events (
  id INT AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  starts_on DATE NOT NULL
);
INSERT INTO registration.events (id, name, starts_on) VALUES (1, 'DevStack Summit 2026', '2026-06-18');
