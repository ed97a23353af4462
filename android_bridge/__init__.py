"""The stable surface a mobile app calls."""
