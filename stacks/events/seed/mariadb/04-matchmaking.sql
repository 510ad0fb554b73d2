-- The players matchmaking pairs up.
CREATE TABLE IF NOT EXISTS matchmaking.players (
  id INT AUTO_INCREMENT PRIMARY KEY,
  handle VARCHAR(50) NOT NULL,
  rating INT NOT NULL
);
INSERT INTO matchmaking.players (id, handle, rating) VALUES
  (1, 'ada', 1820),
  (2, 'grace', 1905);
