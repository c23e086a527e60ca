//! corral-actors: the agent-session domain (sessions, PTYs, screen, persister, recovery).
