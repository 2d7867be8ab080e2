"""What client sessions and backend connections of every engine share."""
